import { ChatConnection, DeviceStream, type ChatConnectionOptions, type DeviceStreamOptions } from "../../../src/client/index.ts";
import { record, recordStream } from "./waiting.ts";

/**
 * The SDK connections a test file opens (chat sockets and device streams), each
 * recorded (events and statuses) and closed together when the file ends.
 */
export class OpenConnections {
  readonly #open: (ChatConnection | DeviceStream)[] = [];

  /** Opens a chat connection and records what it delivers. */
  connect(options: ChatConnectionOptions) {
    const connection = new ChatConnection(options);
    this.#open.push(connection);
    const recorded = record(connection);
    connection.connect();
    return { connection, ...recorded };
  }

  /** Opens a device stream and records what it delivers. */
  stream(options: DeviceStreamOptions) {
    const stream = new DeviceStream(options);
    this.#open.push(stream);
    const recorded = recordStream(stream);
    stream.connect();
    return { stream, ...recorded };
  }

  closeAll(): void {
    for (const connection of this.#open.splice(0)) connection.close();
  }
}
