-- A program setting (docs/api.md#program-settings): the number of free codes below which the program's pool counts
-- as running low. NULL, the default, means never.
ALTER TABLE programs ADD COLUMN pool_low_threshold INTEGER;
