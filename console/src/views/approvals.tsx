import { useNow, useObservable } from "../signal";
import { sessions, tenantVersion } from "../tenant";
import { ApprovalCard } from "../ui/approval";
import { Card, Count, Empty } from "../ui/bits";

/** Every action waiting for a human across the tenant, the one closest to timing out first. */
export function Approvals() {
  useObservable(tenantVersion);
  const now = useNow(1000);
  const pending = [...sessions.values()].flatMap((s) => s.pendingApprovals.map((a) => ({ s, a }))).sort((x, y) => x.a.deadline - y.a.deadline);
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
    </Card>
  );
}
