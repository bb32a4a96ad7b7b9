CREATE TABLE `blocks` (
	`blocker_id` text NOT NULL,
	`blocked_id` text NOT NULL,
	PRIMARY KEY(`blocker_id`, `blocked_id`)
);
--> statement-breakpoint
CREATE TABLE `invitations` (
	`user_id` text PRIMARY KEY NOT NULL,
	`invited_by` text NOT NULL,
	`created_at` integer NOT NULL
);
--> statement-breakpoint
CREATE TABLE `__new_members` (
	`user_id` text NOT NULL,
	`joined_seq` integer NOT NULL,
	`left_seq` integer,
	`role` text NOT NULL,
	`notified_seq` integer DEFAULT 0 NOT NULL,
	PRIMARY KEY(`user_id`, `joined_seq`)
);
--> statement-breakpoint
INSERT INTO `__new_members`("user_id", "joined_seq", "left_seq", "role", "notified_seq") SELECT "user_id", "joined_seq", "left_seq", "role", "notified_seq" FROM `members`;--> statement-breakpoint
DROP TABLE `members`;--> statement-breakpoint
ALTER TABLE `__new_members` RENAME TO `members`;