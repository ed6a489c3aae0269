"""Records, codecs and the published JSON Schemas of notify-pipeline."""
