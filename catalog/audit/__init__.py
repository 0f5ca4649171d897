"""The audit chain: appending entries in the same transaction as the change they record
(:mod:`.log`), seals, keys and bound tables (:mod:`.seal`), and verification (:mod:`.check`)."""
