ALTER TABLE `events` ADD `message_no` integer;--> statement-breakpoint
ALTER TABLE `members` ADD `read_seq` integer DEFAULT 0 NOT NULL;--> statement-breakpoint
-- The messages stored before this version get their numbers, 1, 2, 3… in seq order.
UPDATE `events` SET `message_no` = `numbered`.`n` FROM (SELECT `seq`, row_number() OVER (ORDER BY `seq`) AS `n` FROM `events` WHERE `type` = 'message') AS `numbered` WHERE `events`.`seq` = `numbered`.`seq`;--> statement-breakpoint
-- Nothing tracked reading before this version: what was stored counts as read (otherwise every
-- member would see their whole history unread, their own messages included).
UPDATE `members` SET `read_seq` = coalesce(`left_seq`, (SELECT max(`seq`) FROM `events`), `joined_seq`);
