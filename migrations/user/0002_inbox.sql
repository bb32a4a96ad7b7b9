ALTER TABLE `chats` ADD `read_seq` integer DEFAULT 0 NOT NULL;--> statement-breakpoint
ALTER TABLE `chats` ADD `unread_count` integer DEFAULT 0 NOT NULL;--> statement-breakpoint
ALTER TABLE `chats` ADD `last_message_seq` integer;--> statement-breakpoint
ALTER TABLE `chats` ADD `last_message_sender_id` text;--> statement-breakpoint
ALTER TABLE `chats` ADD `last_message_body` text;--> statement-breakpoint
ALTER TABLE `chats` ADD `last_message_created_at` integer;--> statement-breakpoint
ALTER TABLE `chats` ADD `pinned` integer DEFAULT false NOT NULL;--> statement-breakpoint
ALTER TABLE `chats` ADD `muted_until` integer;--> statement-breakpoint
ALTER TABLE `chats` ADD `archived` integer DEFAULT false NOT NULL;--> statement-breakpoint
CREATE INDEX `chats_archived_by_activity` ON `chats` (`last_activity_at`,`chat_id`) WHERE "chats"."archived" = 1;