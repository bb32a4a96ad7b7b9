/** The Worker entry: the HTTP app and the Durable Object classes. */
import { app } from "./app.ts";

export { ChatRoom } from "./chat-room/chat-room.ts";
export { PhoneIdentity } from "./phone/phone-identity.ts";
export { User } from "./user/user.ts";

export default app;
