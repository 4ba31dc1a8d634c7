import { useRef, useState } from "preact/hooks";
import { killSession } from "./approval";

/** The kill switch: a button, then a dialog that names the session and asks for a reason. */
export function KillButton({ session, disabled }: { session: string; disabled?: boolean }) {
  const dialog = useRef<HTMLDialogElement>(null);
  const [reason, setReason] = useState("");
  const [busy, setBusy] = useState(false);

  async function confirm(e: Event) {
    e.preventDefault();
    setBusy(true);
    const done = await killSession(session, reason.trim());
    setBusy(false);
    if (done) dialog.current?.close();
  }

  return (
    <>
      <button
        type="button"
        class="danger"
        id="kill"
        disabled={disabled}
        onClick={() => {
          setReason("");
          dialog.current?.showModal();
        }}
      >
        Kill…
      </button>
      <dialog ref={dialog} id="kill-dialog" aria-labelledby="kill-title">
        <form onSubmit={confirm}>
          <h3 id="kill-title">
            Kill session <code>{session}</code>?
          </h3>
          <p class="muted">Every further call and action of this session will be refused. This cannot be undone.</p>
          <label>
            Reason
            <input name="reason" maxLength={1024} placeholder="killed by an operator" autoComplete="off" value={reason} onInput={(e) => setReason((e.target as HTMLInputElement).value)} />
          </label>
          <div class="actions">
            <button type="button" class="ghost" onClick={() => dialog.current?.close()}>
              Cancel
            </button>
            <button type="submit" class="danger solid" id="kill-confirm" disabled={busy}>
              {busy ? "Killing…" : "Kill session"}
            </button>
          </div>
        </form>
      </dialog>
    </>
  );
}
