/**
 * `@lifeboat/client`: the browser and Node client for Lifeboat.
 *
 * This entry holds the HTTP client, the AutoSaver, sessions (`startSession`, `resumeOrStart`,
 * `attachSession`) and the recovery API.
 *
 * @module
 */

export {
  ATTEMPTS_MAX,
  BACKOFF_FIRST_MS,
  BACKOFF_MAX_MS,
  Client,
  LifeboatError,
  RETRY_AFTER_MAX_MS,
  backoffMs,
  uuidv7,
} from "./client.js";
export type {
  CallOptions,
  ClientOptions,
  LifeboatErrorFields,
  Problem,
  ProjectBody,
  ProjectSaved,
  PutProject,
  RequestOptions,
} from "./client.js";
export type { components, operations, paths } from "./api.js";
export { AutoSaver } from "./autosave.js";
export type { AutoSaveOptions, ChannelLike, JsonObject, LockManagerLike, PageLike, SaveState, SaveStatus } from "./autosave.js";
export {
  HEARTBEAT_INTERVAL_MIN_MS,
  SessionHandle,
  attachSession,
  getSession,
  resumeOrStart,
  startSession,
} from "./session.js";
export type {
  AssetBody,
  Bytes,
  Checkpoint,
  CheckpointKind,
  NewSession,
  ResumeOrStart,
  ResumeOrStartOptions,
  Resumed,
  SessionRef,
} from "./session.js";
export {
  RECOVERY_ITEMS_MAX,
  discard,
  getRecovery,
  listRecoverable,
  recover,
  recoverableWithOptions,
} from "./recovery-api.js";
export type {
  CheckpointBody,
  ListRecoverableOptions,
  OptionBody,
  RecoverOptions,
  RecoverablePage,
  Recovered,
  RecoveryBody,
  RecoveryOption,
  SessionBody,
} from "./recovery-api.js";
