import { defineConfig } from "drizzle-kit";

export default defineConfig({
  dialect: "sqlite",
  driver: "durable-sqlite",
  schema: "./src/db/chat-room-schema.ts",
  out: "./migrations/chat-room",
});
