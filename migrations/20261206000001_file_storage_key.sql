-- Where an uploaded file's bytes are in the object store (the files API). A row is written only
-- after its object is complete, so every row names an object.
ALTER TABLE files ADD COLUMN storage_key text;
