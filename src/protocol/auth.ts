import { parsePhoneNumberFromString } from "libphonenumber-js/max";
import { z } from "zod";
import { Limits } from "./limits.ts";
import { MediaId } from "./media.ts";
import { longText, nameText, text } from "./text.ts";

/**
 * A phone number as a client sends it: international (a leading `+`), digits, and
 * optionally spaces, dashes, dots and parentheses, which are dropped. It must be a
 * valid number of its country (full metadata), and parses to its one canonical
 * E.164 form, so `+1 (415) 555-0123` and `+14155550123` are the same number and
 * `+44 07700…` cannot become a second account next to `+44 7700…`.
 */
export const PhoneNumber = z
  .string()
  .max(40, "must be an E.164 number such as +14155550123")
  .regex(/^\+[0-9 ().-]+$/, "must be an E.164 number such as +14155550123")
  .transform((value, ctx) => {
    const parsed = parsePhoneNumberFromString(value);
    if (!parsed || !parsed.isValid()) {
      ctx.addIssue({ code: "custom", message: "not a valid phone number", input: value });
      return z.NEVER;
    }
    return parsed.number;
  });
export type PhoneNumber = z.infer<typeof PhoneNumber>;

/** A canonical E.164 number as the server returns it (already checked when it came in). */
const CanonicalPhone = z.string().regex(/^\+[1-9]\d{6,14}$/);

export const UserId = z.string().regex(/^u_[A-Za-z0-9_-]{16,40}$/, "not a user id");
export type UserId = z.infer<typeof UserId>;
export const DeviceId = z.string().regex(/^dv_[A-Za-z0-9_-]{16,40}$/, "not a device id");
export type DeviceId = z.infer<typeof DeviceId>;

/** Names one `POST /api/otp`: its code works only together with it. Opaque (issued: 22 characters). */
const OtpAttemptId = z.string().regex(/^[A-Za-z0-9_-]{1,64}$/, "not an attempt id");

/** POST /api/otp */
export const OtpRequest = z.strictObject({ phone: PhoneNumber });
export type OtpRequest = z.infer<typeof OtpRequest>;

/** 201 from POST /api/otp. The same whether or not the phone has an account. */
export const OtpResponse = z.object({
  sent: z.literal(true),
  expiresInSeconds: z.number().int().positive(),
  /** Seconds before another code may be requested for this phone. */
  resendAfterSeconds: z.number().int().nonnegative(),
  /** Identifies this code: `POST /api/auth/login` needs it with the code. Opaque. */
  attemptId: OtpAttemptId,
  /** Development mode only: the code itself, so no SMS provider is needed. */
  devCode: z.string().regex(/^\d{6}$/).optional(),
});
export type OtpResponse = z.infer<typeof OtpResponse>;

/** POST /api/auth/login */
export const LoginRequest = z.strictObject({
  phone: PhoneNumber,
  code: z.string().regex(/^\d{6}$/, "must be 6 digits"),
  /** From the `POST /api/otp` answer that sent this code. */
  attemptId: OtpAttemptId,
  /** Shown in the device list, for example "Pixel 9" or "Firefox on Linux". */
  deviceName: nameText(64).optional(),
});
export type LoginRequest = z.infer<typeof LoginRequest>;

export const Profile = z.object({
  userId: UserId,
  displayName: z.string(),
  about: z.string(),
  /**
   * The profile picture's id, present when there is one: it changes with every new
   * picture, so a client may cache GET /api/users/:userId/avatar by it.
   */
  avatarId: MediaId.optional(),
  createdAt: z.number().int(),
});
export type Profile = z.infer<typeof Profile>;

/**
 * Who may add this account to a group without asking: anyone, only people it has a
 * one-to-one chat with, or nobody. Anyone else's add becomes an invitation it accepts
 * or declines.
 */
export const GroupAddSetting = z.enum(["everyone", "contacts", "nobody"]);
export type GroupAddSetting = z.infer<typeof GroupAddSetting>;

/** What GET /api/me returns: the profile plus what only its owner sees (phone, privacy settings). */
export const Me = Profile.extend({
  phone: CanonicalPhone,
  groupAdd: GroupAddSetting,
  /** The account hides its last seen time from everyone, and then sees no one's (presence, docs/protocol.md §8.6). */
  hideLastSeen: z.boolean(),
});
export type Me = z.infer<typeof Me>;

/** PATCH /api/me */
export const ProfilePatch = z
  .strictObject({
    displayName: nameText(Limits.maxDisplayNameLength).optional(),
    about: longText(Limits.maxAboutLength).optional(),
    groupAdd: GroupAddSetting.optional(),
    hideLastSeen: z.boolean().optional(),
  })
  .refine((patch) => Object.keys(patch).length > 0, {
    message: "give displayName, about, groupAdd or hideLastSeen",
  });
export type ProfilePatch = z.infer<typeof ProfilePatch>;

export const Device = z.object({
  deviceId: DeviceId,
  name: z.string(),
  createdAt: z.number().int(),
  lastActiveAt: z.number().int(),
  /** True for the device whose token made the request. */
  current: z.boolean(),
});
export type Device = z.infer<typeof Device>;

/** GET /api/devices */
export const DeviceList = z.object({ devices: z.array(Device) });
export type DeviceList = z.infer<typeof DeviceList>;

/** 200 from POST /api/auth/login and POST /api/auth/refresh. */
export const TokenResponse = z.object({
  /** The access token: a JWS (HS256) with `sub` = userId and `deviceId`. */
  credentials: z.string(),
  /** Seconds until `credentials` expires. */
  expiresIn: z.number().int().positive(),
  /** Single use: each refresh returns a new one; presenting a used one revokes the device. */
  refreshToken: z.string(),
  user: Me,
  device: Device,
});
export type TokenResponse = z.infer<typeof TokenResponse>;

/** POST /api/auth/refresh */
export const RefreshRequest = z.strictObject({ refreshToken: text().min(1).max(200) });
export type RefreshRequest = z.infer<typeof RefreshRequest>;

/** GET /api/users/lookup?phone=... */
export const UserLookupQuery = z.strictObject({ phone: PhoneNumber });
export type UserLookupQuery = z.infer<typeof UserLookupQuery>;

/** 200 from the lookup: a public profile. Unknown numbers get 404 not_found. */
export const UserLookupResponse = z.object({ user: Profile });
export type UserLookupResponse = z.infer<typeof UserLookupResponse>;

/** The claims of an access token. */
export const AccessClaims = z.object({
  sub: UserId,
  deviceId: DeviceId,
  iat: z.number().int(),
  exp: z.number().int(),
});
export type AccessClaims = z.infer<typeof AccessClaims>;
