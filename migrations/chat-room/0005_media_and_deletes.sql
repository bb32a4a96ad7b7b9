CREATE TABLE `media` (
	`media_id` text PRIMARY KEY NOT NULL,
	`uploader_id` text NOT NULL,
	`state` text NOT NULL,
	`r2_key` text NOT NULL,
	`kind` text,
	`content_type` text,
	`size` integer NOT NULL,
	`created_at` integer NOT NULL,
	`expires_at` integer,
	`attached_seq` integer
);
--> statement-breakpoint
CREATE INDEX `media_by_uploader` ON `media` (`uploader_id`,`state`);--> statement-breakpoint
CREATE INDEX `media_by_expiry` ON `media` (`expires_at`);--> statement-breakpoint
ALTER TABLE `events` ADD `attachments` text;--> statement-breakpoint
ALTER TABLE `events` ADD `deleted_seq` integer;