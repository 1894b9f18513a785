-- The chain's head follows every appended event, so an append is one INSERT. Appending with a
-- stale idea of the head fails on the `seq` primary key, and the writer re-reads the head.
CREATE TRIGGER audit_head_follows AFTER INSERT ON audit_events
BEGIN
    UPDATE audit_head SET seq = NEW.seq, hash = NEW.hash WHERE id = 1 AND seq < NEW.seq;
END;
