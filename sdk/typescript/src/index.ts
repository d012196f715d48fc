/**
 * `@lifeboat/client`: the browser and Node client for Lifeboat.
 *
 * This entry holds the HTTP client; the AutoSaver and sessions join it later.
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
