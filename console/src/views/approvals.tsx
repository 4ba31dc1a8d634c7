import { useNow, useObservable } from "../signal";
import { sessions, tenantVersion } from "../tenant";
import { ApprovalCard } from "../ui/approval";
import { Card, Count, Empty } from "../ui/bits";

/** Every action waiting for a human across the tenant, the one closest to timing out first. */
export function Approvals() {
  useObservable(tenantVersion);
  const now = useNow(1000);
  const all = [...sessions.values()].flatMap((s) => s.pendingApprovals.map((a) => ({ s, a }))).sort((x, y) => x.a.deadline - y.a.deadline);
  // Past its deadline an approval is the actor's to deny: shown apart, not as waiting.
  const pending = all.filter(({ a }) => a.deadline > now);
  const lapsed = all.filter(({ a }) => a.deadline <= now);
  return (
    <Card title={<>Approvals <Count n={pending.length} hot /></>} name="approvals" extra={<span class="muted small">closest to timing out first · a timed-out approval is denied by the actor</span>}>
      {pending.length === 0 ? (
        <Empty>Nothing is waiting for a decision.</Empty>
      ) : (
        <div class="approvals" id="approvals">
          {pending.map(({ s, a }) => (
            <ApprovalCard key={a.approvalId} session={s} a={a} now={now} />
          ))}
        </div>
      )}
      {lapsed.length > 0 && (
        <>
          <h3 class="sub-head muted">
            Timed out: denied by the actor <Count n={lapsed.length} />
          </h3>
          <div class="approvals" id="approvals-lapsed">
            {lapsed.map(({ s, a }) => (
              <ApprovalCard key={a.approvalId} session={s} a={a} now={now} />
            ))}
          </div>
        </>
      )}
    </Card>
  );
}
