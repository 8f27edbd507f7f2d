/** The pure Raft core: no I/O, no clocks, no global randomness. */
export * from './types.ts';
export { RaftCore, DEFAULT_CORE_OPTIONS, type CoreStatus, type FaultInjection, type ProposeResult, type ProgressStatus } from './raft.ts';
export { ProgressState } from './progress.ts';
export { seededRandom, randomInt, type Random } from './random.ts';
export { applyConfigChange, encodeConfigChange, decodeConfigChange, isVoter, isMember, members, emptyConfig } from './config.ts';
export { majority, committedIndex, tallyVotes, hasQuorum } from './quorum.ts';
