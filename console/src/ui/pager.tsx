import type { ComponentChildren } from "preact";
import { useState } from "preact/hooks";

// Lists the API pages by an opaque cursor (sessions, audit events): the way back is the
// cursors already walked, the way on is the one the current page gave.

export interface Cursors {
  /** The current page's cursor: null for the first page. */
  cursor: string | null;
  /** How many pages before this one. */
  index: number;
  back(): void;
  forward(next: string): void;
  reset(): void;
}

export function useCursors(): Cursors {
  const [cursors, setCursors] = useState<Array<string | null>>([null]);
  return {
    cursor: cursors[cursors.length - 1],
    index: cursors.length - 1,
    back: () => setCursors((c) => c.slice(0, -1)),
    forward: (next) => setCursors((c) => [...c, next]),
    reset: () => setCursors([null]),
  };
}

/** Back and on under a paged list; `children` (what the page holds, any settings) stand left of them. */
export function Pager({
  label,
  pages,
  next,
  loading,
  back,
  forward,
  children,
}: {
  label: string;
  pages: Cursors;
  next: string | null | undefined;
  loading: boolean;
  /** Each button's id and text. */
  back: readonly [string, string];
  forward: readonly [string, string];
  children: ComponentChildren;
}) {
  return (
    <nav class="pager" aria-label={label}>
      {children}
      <span class="spacer" />
      <button type="button" id={back[0]} disabled={pages.index === 0 || loading} onClick={pages.back}>
        {back[1]}
      </button>
      <button type="button" id={forward[0]} disabled={!next || loading} onClick={() => next && pages.forward(next)}>
        {forward[1]}
      </button>
    </nav>
  );
}
