// The client checkpoint: `{id: "<nodeId>_<ms at creation>", sequences, timestamp, nodeId}`.
// Not persisted (the real client persists it in browsers only, under `pocket_sync_checkpoint`).

export class CheckpointManager {
  constructor(nodeId, now = Date.now()) {
    this.checkpoint = { id: `${nodeId}_${now}`, sequences: {}, timestamp: 0, nodeId };
  }

  getSequence(collection) {
    return this.checkpoint.sequences[collection] ?? 0;
  }

  /** `sequences[c] = max(sequences[c] ?? 0, sequence)`, `timestamp = now`. */
  updateSequence(collection, sequence) {
    this.checkpoint.sequences[collection] = Math.max(this.checkpoint.sequences[collection] ?? 0, sequence);
    this.checkpoint.timestamp = Date.now();
  }

  /**
   * Merges a server checkpoint: max per collection, every other field ignored. A missing
   * `sequences` is tolerated; a missing checkpoint throws a TypeError, as in the real client.
   */
  mergeServerCheckpoint(serverCheckpoint) {
    const sequences = serverCheckpoint.sequences;
    if (sequences) {
      for (const [collection, sequence] of Object.entries(sequences)) {
        this.checkpoint.sequences[collection] = Math.max(this.checkpoint.sequences[collection] ?? 0, sequence);
      }
    }
    this.checkpoint.timestamp = Date.now();
  }

  /** A copy, as sent in a push or pull. */
  snapshot() {
    return structuredClone(this.checkpoint);
  }
}
