CREATE TABLE `chat` (
	`chat_id` text PRIMARY KEY NOT NULL,
	`kind` text NOT NULL,
	`name` text NOT NULL,
	`description` text DEFAULT '' NOT NULL,
	`created_by` text NOT NULL,
	`created_at` integer NOT NULL
);
--> statement-breakpoint
CREATE TABLE `events` (
	`seq` integer PRIMARY KEY NOT NULL,
	`type` text NOT NULL,
	`created_at` integer NOT NULL,
	`actor_id` text NOT NULL,
	`actor_device_id` text,
	`client_id` text,
	`message_id` text,
	`body` text,
	`reply_to_seq` integer,
	`data` text
);
--> statement-breakpoint
CREATE UNIQUE INDEX `events_client_id` ON `events` (`actor_device_id`,`client_id`);--> statement-breakpoint
CREATE TABLE `members` (
	`user_id` text PRIMARY KEY NOT NULL,
	`role` text NOT NULL,
	`joined_seq` integer NOT NULL,
	`left_seq` integer,
	`notified_seq` integer DEFAULT 0 NOT NULL
);
