/**
 * Which tab saves a document: the one holding the Web Lock `lifeboat:<db>:<doc>`. Every
 * tab writes its edits to IndexedDB; only the lock holder sends them, so one document
 * never has two saves in flight. A tab that closes (or dies) releases the lock and the
 * next tab in the queue takes over.
 *
 * @module
 */

/** The part of `navigator.locks` (Web Locks) the AutoSaver uses; tests pass a fake. */
export interface LockManagerLike {
  request(
    name: string,
    options: { ifAvailable?: boolean; signal?: AbortSignal },
    callback: (lock: unknown) => Promise<unknown>,
  ): Promise<unknown>;
}

/**
 * Asks for lock `name`; once it is held, runs `lead` and keeps the lock until `held`
 * settles. Resolves when it is known whether this tab leads: at once if the lock was
 * free (after `lead` has run), or as soon as the request is queued behind another tab
 * (`lead` then runs when that tab lets go). Without a lock manager, or when it refuses the
 * request (an opaque origin), this tab leads. If `lead` fails, the lock is let go.
 * Aborting `signal` withdraws a queued request.
 */
export function elect(
  locks: LockManagerLike | undefined,
  name: string,
  signal: AbortSignal,
  held: Promise<unknown>,
  lead: () => Promise<void>,
): Promise<void> {
  if (!locks) return lead();
  return new Promise((decided) => {
    let answered = false;
    const hold = async (): Promise<unknown> => {
      await lead();
      return held;
    };
    locks
      .request(name, { ifAvailable: true }, async (lock) => {
        answered = true;
        if (lock) {
          await lead().finally(decided);
          return held;
        }
        decided();
        // Withdrawn requests reject with an AbortError: nothing to do then.
        locks.request(name, { signal }, hold).catch(() => {});
        return undefined;
      })
      // Refused before it answered: lead without a lock. Else `lead` failed: the lock is let go.
      .catch(() => (answered ? decided() : lead().then(decided, decided)));
  });
}
