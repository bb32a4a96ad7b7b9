import { AppError } from "../lib/app-error.ts";

/** What adding one account to a chat does, as that account's own object decides (`User.addPolicy`). */
export type AddPolicy = "allow" | "invite" | "blocked" | "missing";

/**
 * An add (or a chat's creation) is refused whole when any account does not exist
 * (`invalid_member`) or blocked the one adding (`blocked`): nothing changes for anyone.
 */
export function refuseAdds(userIds: string[], policies: AddPolicy[]): void {
  const missing = userIds.filter((_, index) => policies[index] === "missing");
  if (missing.length > 0) throw new AppError("invalid_member", 400, `no account for ${missing.slice(0, 5).join(", ")}`, { retryable: false });
  if (policies.includes("blocked")) throw new AppError("blocked", 403, "one of these accounts does not accept being added by you", { retryable: false });
}
