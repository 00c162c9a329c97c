package job

// MaxMetadataBytes exposes the metadata size limit to the external tests.
const MaxMetadataBytes = maxMetadataBytes
