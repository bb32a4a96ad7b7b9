ALTER TABLE `media` ADD `name` text;--> statement-breakpoint
ALTER TABLE `media` ADD `multipart` text;--> statement-breakpoint
CREATE INDEX `media_by_message` ON `media` (`attached_seq`);