/** Durable Object stubs by the name each class is keyed on. */
export const userObject = (env: Env, userId: string) => env.USER.get(env.USER.idFromName(userId));
export const chatRoomObject = (env: Env, chatId: string) => env.CHAT_ROOM.get(env.CHAT_ROOM.idFromName(chatId));
export const phoneObject = (env: Env, phone: string) => env.PHONE.get(env.PHONE.idFromName(phone));
