CREATE TABLE `hidden_messages` (
	`hidden_no` integer PRIMARY KEY NOT NULL,
	`chat_id` text NOT NULL,
	`seq` integer NOT NULL,
	`hidden_at` integer NOT NULL
);
--> statement-breakpoint
CREATE UNIQUE INDEX `hidden_messages_by_message` ON `hidden_messages` (`chat_id`,`seq`);--> statement-breakpoint
ALTER TABLE `chats` ADD `last_message_attachments` text;--> statement-breakpoint
ALTER TABLE `chats` ADD `last_message_deleted` integer DEFAULT false NOT NULL;--> statement-breakpoint
ALTER TABLE `profile` ADD `avatar_id` text;