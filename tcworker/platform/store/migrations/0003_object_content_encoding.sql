-- `gzip` when the uploader PUT the data with Content-Encoding: gzip (served back the same way).
ALTER TABLE objects ADD COLUMN content_encoding TEXT;
