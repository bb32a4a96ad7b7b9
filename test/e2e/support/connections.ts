import { ChatConnection, type ChatConnectionOptions } from "../../../src/client/index.ts";
import { record } from "./waiting.ts";

/**
 * The SDK connections a test file opens, each recorded (events and statuses) and
 * closed together when the file ends.
 */
export class OpenConnections {
  readonly #open: ChatConnection[] = [];

  /** Opens a connection and records what it delivers. */
  connect(options: ChatConnectionOptions) {
    const connection = new ChatConnection(options);
    this.#open.push(connection);
    const recorded = record(connection);
    connection.connect();
    return { connection, ...recorded };
  }

  closeAll(): void {
    for (const connection of this.#open.splice(0)) connection.close();
  }
}
