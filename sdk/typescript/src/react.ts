/**
 * `@lifeboat/client/react`: hooks for React 18+ (an optional peer dependency; this is the
 * only module that imports `react`).
 *
 * - `useAutoSaver(client, projectId, options)` opens an `AutoSaver` for the component's
 *   life and re-renders on its status (`useSyncExternalStore`).
 * - `useRecoverable(client, projectId)` lists the sessions that can be recovered, with
 *   their options, for an application that draws its own prompt.
 *
 * @module
 */

import { useCallback, useEffect, useMemo, useRef, useState, useSyncExternalStore } from "react";

import { AutoSaver } from "./autosave.js";
import type { Client } from "./client.js";
import { type RecoveryBody, recoverableWithOptions } from "./recovery-api.js";

/** What `AutoSaver.open` takes after the client and the project id. */
export type UseAutoSaverOptions = Parameters<typeof AutoSaver.open>[2];
/** An AutoSaver's status: `{state, pending, revision, conflicts, error, leader}`. */
export type AutoSaverStatus = AutoSaver["status"];

/** What `useAutoSaver` answers. */
export interface UseAutoSaver {
  /** The open AutoSaver; null while it opens, after it failed to, or without a client or project. */
  saver: AutoSaver | null;
  /** Its status, re-rendered on every change; null while there is no saver. */
  status: AutoSaverStatus | null;
  /** Why it could not be opened, or null. */
  error: unknown;
}

/** What `useRecoverable` answers. */
export interface UseRecoverable {
  /** The recoverable sessions, each with its `options`; empty until the first answer. */
  items: RecoveryBody[];
  /** Whether a read is under way. */
  loading: boolean;
  /** Why the last read failed, or null (the items of the read before are kept). */
  error: unknown;
  /** Reads again (after a recovery or a discard); resolves when the answer is in. */
  refresh: () => Promise<void>;
}

/**
 * Opens an `AutoSaver` for `projectId` while the component is mounted (again when `client`
 * or `projectId` change; `options` are read when it opens) and closes it on unmount.
 *
 * ```tsx
 * const { saver, status } = useAutoSaver(client, "essay", { debounceMs: 500 });
 * <textarea onChange={(e) => void saver?.edit({ text: e.target.value })} />
 * <span>{status?.state}</span>
 * ```
 */
export function useAutoSaver(client: Client | null, projectId: string | null, options?: UseAutoSaverOptions): UseAutoSaver {
  // What was opened is kept with the client and project it was opened for: a render for
  // another project must never hand out the previous project's saver (an edit would land in
  // the wrong document) between that render and the effect that opens the new one.
  // The effect's cleanup empties it too, so that a saver it closed is never handed out
  // again (a project that goes A → none → A).
  type Opened = { client: Client | null; projectId: string | null; saver: AutoSaver | null; error: unknown };
  const [opened, setOpened] = useState<Opened>(NOTHING_OPENED);
  const optionsRef = useRef(options);
  // Declared before the effect that opens, so that it runs first and that one reads today's options.
  useEffect(() => {
    optionsRef.current = options;
  });
  useEffect(() => {
    if (client === null || projectId === null) return;
    let live = true;
    let saver: AutoSaver | null = null;
    AutoSaver.open(client, projectId, optionsRef.current).then(
      (open) => {
        if (live) {
          saver = open;
          setOpened({ client, projectId, saver: open, error: null });
        } else {
          closeQuietly(open); // Unmounted (or the project changed) while it opened.
        }
      },
      (error: unknown) => {
        if (live) setOpened({ client, projectId, saver: null, error });
      },
    );
    return () => {
      live = false;
      setOpened(NOTHING_OPENED);
      if (saver !== null) closeQuietly(saver);
    };
  }, [client, projectId]);
  const current = opened.client === client && opened.projectId === projectId;
  const saver = current ? opened.saver : null;
  const store = useMemo(() => statusStore(saver), [saver]);
  const status = useSyncExternalStore(store.subscribe, store.snapshot, store.snapshot);
  return { saver, status, error: current ? opened.error : null };
}

/**
 * The sessions of `projectId` (or all the token may see) that can be recovered, read when
 * the component mounts and on `refresh()`. Recover or discard them with `recover` and
 * `discard`, then `refresh()`.
 */
export function useRecoverable(client: Client | null, projectId?: string | null): UseRecoverable {
  const [state, setState] = useState<Omit<UseRecoverable, "refresh">>({ items: [], loading: client !== null, error: null });
  const generation = useRef(0);
  const refresh = useCallback(async (): Promise<void> => {
    const mine = ++generation.current;
    if (client === null) return setState({ items: [], loading: false, error: null });
    setState((before) => ({ ...before, loading: true }));
    try {
      const items = await recoverableWithOptions(client, projectId ? { projectId } : {});
      if (mine === generation.current) setState({ items, loading: false, error: null });
    } catch (error) {
      if (mine === generation.current) setState((before) => ({ items: before.items, loading: false, error }));
    }
  }, [client, projectId]);
  useEffect(() => {
    void refresh();
    return () => {
      generation.current += 1; // Answers still on their way are for another client or project.
    };
  }, [refresh]);
  return { ...state, refresh };
}

/**
 * A `useSyncExternalStore` store over a saver's status. The snapshot is taken when the
 * saver reports a change, not on every render, so it stays the same object between changes
 * (React re-renders forever otherwise) whatever `saver.status` answers.
 */
function statusStore(saver: AutoSaver | null): { subscribe: (notify: () => void) => () => void; snapshot: () => AutoSaverStatus | null } {
  let current: AutoSaverStatus | null = saver?.status ?? null;
  return {
    subscribe(notify) {
      if (saver === null) return () => {};
      const unsubscribe = saver.onStatus(() => {
        current = saver.status;
        notify();
      });
      // A change between the render and this subscription is caught here.
      if (current !== saver.status) {
        current = saver.status;
        notify();
      }
      return unsubscribe;
    },
    snapshot: () => current,
  };
}

const NOTHING_OPENED = { client: null, projectId: null, saver: null, error: null } as const;

function closeQuietly(saver: AutoSaver): void {
  // Closing flushes what is pending into the outbox; a failure there has nobody left to tell.
  Promise.resolve(saver.close()).catch(() => {});
}
