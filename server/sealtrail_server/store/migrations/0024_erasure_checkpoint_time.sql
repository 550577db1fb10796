-- When the final checkpoint of an erased tenant was signed: with it, the
-- receipt kept is the receipt returned, whole, so a repeated EraseTenant (a
-- retry whose answer was lost) answers the first call's receipt. Receipts
-- kept before have none, and a repeat of theirs is refused as before.
ALTER TABLE tenant_erasures ADD COLUMN final_checkpoint_issued_at timestamptz;
