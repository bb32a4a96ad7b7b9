ALTER TABLE `chats` ADD `delivered_up_to` integer DEFAULT 0 NOT NULL;--> statement-breakpoint
ALTER TABLE `chats` ADD `seen_up_to` integer DEFAULT 0 NOT NULL;--> statement-breakpoint
ALTER TABLE `chats` ADD `receipts_at` integer DEFAULT 0 NOT NULL;