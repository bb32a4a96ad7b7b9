import { AppError } from "../lib/app-error.ts";
import type { Config } from "../lib/config.ts";
import { describeError, log } from "../lib/log.ts";

/** Delivers a login code to a phone. One implementation per provider. */
export interface OtpSender {
  send(phone: string, code: string): Promise<void>;
}

/** Development: writes the code to the Worker's log. Refused outside development mode. */
export class ConsoleOtpSender implements OtpSender {
  async send(phone: string, code: string): Promise<void> {
    log.info("otp code (console sender)", { phone, code });
  }
}

/**
 * Production: POSTs `{to, code, message}` as JSON to an SMS provider's webhook (or a
 * small adapter in front of one), with `Authorization: Bearer OTP_WEBHOOK_TOKEN`
 * when that secret is set. Any non-2xx answer is a failure the caller reports.
 */
export class WebhookOtpSender implements OtpSender {
  readonly #url: string;
  readonly #token: string | undefined;

  constructor(url: string, token: string | undefined) {
    this.#url = url;
    this.#token = token;
  }

  async send(phone: string, code: string): Promise<void> {
    const headers: Record<string, string> = { "content-type": "application/json" };
    if (this.#token) headers.authorization = `Bearer ${this.#token}`;
    let response: Response;
    try {
      response = await fetch(this.#url, {
        method: "POST",
        headers,
        body: JSON.stringify({ to: phone, code, message: `Your login code is ${code}` }),
      });
    } catch (error) {
      log.error("otp webhook unreachable", describeError(error));
      throw new AppError("unavailable", 503, "the code could not be sent: try again later");
    }
    if (!response.ok) {
      log.error("otp webhook refused", { status: response.status });
      throw new AppError("unavailable", 503, "the code could not be sent: try again later");
    }
  }
}

export function otpSenderFor(config: Config): OtpSender {
  if (config.otp.sender === "console") {
    if (!config.devMode) {
      throw new AppError("misconfigured", 500, "OTP_SENDER=console is only allowed in development mode");
    }
    return new ConsoleOtpSender();
  }
  if (!config.otp.webhookUrl) {
    throw new AppError("misconfigured", 500, "OTP_WEBHOOK_URL is not set: the code cannot be delivered");
  }
  return new WebhookOtpSender(config.otp.webhookUrl, config.otp.webhookToken);
}
