// Every size the edge enforces, in one place, so a limit is stated once and named in the
// 400 that refuses it. Each is far above what a real agent or policy needs and far below
// what would let one caller stall the isolate that every tenant shares.

/** HTTP bodies of the /v1 routes (the proxy has its own, larger limit). */
export const MAX_BODY_BYTES = 1024 * 1024;
/**
 * Socket messages. workerd closes a socket itself (code 1009) past 1 MiB, before our code
 * sees the message; below that, ours answers an `error` and the socket stays open.
 */
export const MAX_SOCKET_MESSAGE_BYTES = 256 * 1024;
/**
 * A refusal answered before the body was read drains up to this much (the proxy's body
 * limit), so the client's keep-alive connection survives; past it, the answer carries
 * `Connection: close` and the connection ends.
 */
export const MAX_DRAIN_BYTES = 16 * 1024 * 1024;
/** JSON nesting, in bodies, messages and policies. */
export const MAX_DEPTH = 64;

/** Free text: agent, user, run, task, notes, reasons, details. */
export const MAX_TEXT = 1024;
/** Client ids (action ids, Idempotency-Key), action names, violation kinds. */
export const MAX_ID = 256;
export const MAX_KIND = 128;

/** An action's arguments: top-level names, the length of a name, and any one string in them. */
export const MAX_ARGS = 256;
export const MAX_ARG_NAME = 256;

/** Policies. */
export const MAX_POLICY_LIST = 1000; // allow / deny lists, notify targets
export const MAX_RATE_RULES = 32;
export const MAX_RULE_ACTIONS = 256; // actions named under actions.rules
export const MAX_RULE_ARGS = 64; // argument rules per action
export const MAX_FORBIDDEN = 64; // entries of one forbidden list
export const MAX_FORBIDDEN_TEXT = 256; // characters of one entry
export const MAX_POLICY_KEY = 256; // action names, argument names, violation kinds used as keys
export const MAX_URL = 2048;

/**
 * Patterns: RE2 syntax, at most this long, compiling to at most this many instructions, at
 * most this many per policy. Compiling costs about 1 us per instruction, and a pattern of
 * this length can ask for ~50,000 before it is refused (~50 ms), so a policy's validation stays
 * bounded too (each distinct pattern is compiled once per isolate).
 */
export const MAX_PATTERN_LENGTH = 512;
export const MAX_PATTERN_PROGRAM = 1000;
export const MAX_PATTERNS = 32;
/**
 * The work one action's argument checks may do. A pattern costs (its RE2 instructions x
 * the characters it reads); a forbidden list costs (its entries x the characters it
 * scans) / 32. Measured on this project's 2-core machine, RE2's worst case (a pattern
 * whose DFA keeps making new states, then its NFA) costs about 100 ns per unit, and a
 * worst-case substring search about 4 ns per character and entry; so no action's checks
 * can take much over ~50 ms. Typical checks run on the DFA at a small fraction of this.
 * Past the bound the action is refused (fail closed), never checked in part.
 */
export const MAX_CHECK_WORK = 1 << 19;
/** How many forbidden-list (character x entry) steps make one unit of MAX_CHECK_WORK. */
export const FORBIDDEN_STEPS_PER_UNIT = 32;
