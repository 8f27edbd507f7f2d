/**
 * lincheck: a linearizability checker for histories recorded against rale.
 * See DESIGN.md in this folder.
 */
export {
  HistoryRecorder,
  failedOp,
  historyFromEvents,
  okOp,
  unknownOp,
  validateHistory,
  type ClientId,
  type HistoryEvent,
  type Operation,
  type OperationHandle,
  type Outcome,
} from './history.ts';
export {
  UNKNOWN_OUTPUT,
  describeOperationOf,
  describeStateOf,
  type Model,
  type StepResult,
  type UnknownOutput,
} from './model.ts';
export {
  cas,
  casKey,
  del,
  get,
  kvModel,
  put,
  read,
  registerModel,
  write,
  type KvInput,
  type KvOutput,
  type KvState,
  type RegisterInput,
  type RegisterOutput,
  type RegisterValue,
  type Scalar,
} from './models.ts';
export {
  DEFAULT_MAX_STEPS,
  DEFAULT_TIMEOUT_MS,
  check,
  type CheckOptions,
  type CheckResult,
  type FailureReport,
  type MinimizeOptions,
  type OperationRef,
  type PartitionResult,
  type Verdict,
} from './checker.ts';
export { formatFailure, formatResult } from './report.ts';
export { verifyWitnesses } from './witness.ts';
export { Bitset } from './bitset.ts';
