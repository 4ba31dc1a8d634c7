import { useState } from "preact/hooks";

// An action's arguments as the agent sent them, readable: one row per argument, nested
// objects and lists as nested rows (folded past the first levels), long text folded to its
// start with the rest one click away. Every value reaches the DOM as text.

/** Characters of a string shown before it folds. */
export const FOLD_CHARS = 240;
/** Nesting levels open at first; deeper ones start folded. */
const OPEN_DEPTH = 2;
/** Entries of an object or list shown at first. */
const FIRST_ENTRIES = 50;

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };

const isStructure = (v: unknown): v is Json[] | Record<string, Json> => v !== null && typeof v === "object";
const entriesOf = (v: Json[] | Record<string, Json>): Array<[string, Json]> => (Array.isArray(v) ? v.map((x, i) => [String(i), x]) : Object.entries(v));

function LongText({ text, path }: { text: string; path: string }) {
  const [open, setOpen] = useState(false);
  if (text.length <= FOLD_CHARS && text.split("\n").length <= 6) return <span class="arg-str">{text}</span>;
  return (
    <span class="arg-str long" data-folded={open ? "false" : "true"}>
      {open ? text : `${text.slice(0, FOLD_CHARS).trimEnd()}…`}
      <button type="button" class="link fold" data-fold={path} aria-expanded={open} onClick={() => setOpen(!open)}>
        {open ? "show less" : `show all ${text.length.toLocaleString("en-US")} characters`}
      </button>
    </span>
  );
}

function Scalar({ value, path }: { value: Json; path: string }) {
  if (typeof value === "string") return <LongText text={value} path={path} />;
  return <span class={`arg-lit arg-${value === null ? "null" : typeof value}`}>{JSON.stringify(value)}</span>;
}

function Structure({ value, path, depth }: { value: Json[] | Record<string, Json>; path: string; depth: number }) {
  const entries = entriesOf(value);
  const [open, setOpen] = useState(depth < OPEN_DEPTH);
  const [all, setAll] = useState(false);
  const label = Array.isArray(value) ? `list of ${entries.length}` : `${entries.length} field${entries.length === 1 ? "" : "s"}`;
  if (!entries.length) return <span class="arg-lit">{Array.isArray(value) ? "[]" : "{}"}</span>;
  const shown = all ? entries : entries.slice(0, FIRST_ENTRIES);
  return (
    <div class="arg-nest">
      <button type="button" class="link fold" data-fold={path} aria-expanded={open} onClick={() => setOpen(!open)}>
        {open ? "▾" : "▸"} {label}
      </button>
      {open && (
        <table class="args nested">
          <tbody>
            {shown.map(([k, v]) => (
              <Row key={k} name={k} value={v} path={`${path}.${k}`} depth={depth + 1} index={Array.isArray(value)} />
            ))}
          </tbody>
        </table>
      )}
      {open && entries.length > shown.length && (
        <button type="button" class="link" onClick={() => setAll(true)}>
          show the other {entries.length - shown.length}
        </button>
      )}
    </div>
  );
}

function Row({ name, value, path, depth, index, checked }: { name: string; value: Json; path: string; depth: number; index?: boolean; checked?: boolean }) {
  return (
    <tr data-arg={path} class={checked ? "checked" : undefined}>
      <th scope="row" class={`mono${index ? " index" : ""}`}>
        {index ? `[${name}]` : name}
        {checked && (
          <span class="tag" title="The argument the rule that asked for review reads">
            rule
          </span>
        )}
      </th>
      <td>{isStructure(value) ? <Structure value={value} path={path} depth={depth} /> : <Scalar value={value} path={path} />}</td>
    </tr>
  );
}

/** The argument a rule path such as `actions.rules.refund.amount.require_approval_above` reads. */
export function ruleArgument(rule: string, action: string): string | undefined {
  const prefix = `actions.rules.${action}.`;
  if (!rule.startsWith(prefix)) return undefined;
  const rest = rule.slice(prefix.length);
  const dot = rest.lastIndexOf(".");
  return dot > 0 ? rest.slice(0, dot) : undefined;
}

export function ArgTable({ args, checked }: { args: Record<string, unknown>; checked?: string }) {
  const entries = Object.entries(args) as Array<[string, Json]>;
  return (
    <table class="args" aria-label="Arguments">
      <tbody>
        {entries.map(([k, v]) => (
          <Row key={k} name={k} value={v} path={k} depth={0} checked={k === checked} />
        ))}
      </tbody>
    </table>
  );
}

export function sizeOf(bytes: number): string {
  if (bytes < 1024) return `${bytes} bytes`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KB`;
  return `${(bytes / 1024 / 1024).toFixed(2)} MB`;
}
