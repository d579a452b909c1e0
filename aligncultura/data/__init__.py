"""The input contract: readers, quarantine, split; the cultural taxonomy; the embedded sample."""
