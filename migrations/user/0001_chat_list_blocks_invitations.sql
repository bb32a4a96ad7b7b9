CREATE TABLE `blocks` (
	`user_id` text PRIMARY KEY NOT NULL,
	`created_at` integer NOT NULL
);
--> statement-breakpoint
CREATE TABLE `invitations` (
	`chat_id` text PRIMARY KEY NOT NULL,
	`kind` text NOT NULL,
	`name` text NOT NULL,
	`invited_by` text NOT NULL,
	`created_at` integer NOT NULL
);
--> statement-breakpoint
ALTER TABLE `chats` ADD `head_seq` integer DEFAULT 0 NOT NULL;--> statement-breakpoint
ALTER TABLE `chats` ADD `member_count` integer DEFAULT 0 NOT NULL;--> statement-breakpoint
ALTER TABLE `chats` ADD `last_activity_at` integer DEFAULT 0 NOT NULL;--> statement-breakpoint
ALTER TABLE `chats` ADD `membership` text DEFAULT 'member' NOT NULL;--> statement-breakpoint
UPDATE `chats` SET `last_activity_at` = `added_at`;--> statement-breakpoint
CREATE INDEX `chats_by_activity` ON `chats` (`last_activity_at`,`chat_id`);--> statement-breakpoint
ALTER TABLE `profile` ADD `group_add` text DEFAULT 'everyone' NOT NULL;