CREATE TABLE `receipt_advances` (
	`user_id` text NOT NULL,
	`kind` text NOT NULL,
	`from_seq` integer NOT NULL,
	`seq` integer NOT NULL,
	`at` integer NOT NULL,
	PRIMARY KEY(`user_id`, `kind`, `seq`)
);
--> statement-breakpoint
ALTER TABLE `members` ADD `delivered_seq` integer DEFAULT 0 NOT NULL;--> statement-breakpoint
ALTER TABLE `members` ADD `seen_seq` integer DEFAULT 0 NOT NULL;--> statement-breakpoint
-- Nothing tracked receipts before this version: what a member had read counts as delivered and seen.
UPDATE `members` SET `delivered_seq` = `read_seq`, `seen_seq` = `read_seq`;
