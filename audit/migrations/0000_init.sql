CREATE TABLE "audit_checkpoints" (
	"tenant" text NOT NULL,
	"session" text NOT NULL,
	"seq" integer NOT NULL,
	"hash" text NOT NULL,
	"ts" bigint NOT NULL,
	"signature" text NOT NULL,
	"key_id" text NOT NULL,
	CONSTRAINT "audit_checkpoints_tenant_session_seq_pk" PRIMARY KEY("tenant","session","seq")
);
--> statement-breakpoint
CREATE TABLE "audit_erasures" (
	"id" text PRIMARY KEY NOT NULL,
	"tenant" text NOT NULL,
	"subject_digest" text NOT NULL,
	"requested_by" text NOT NULL,
	"requested_at" bigint NOT NULL,
	"completed_at" bigint,
	"status" text NOT NULL,
	"sessions" integer DEFAULT 0 NOT NULL,
	"events" integer DEFAULT 0 NOT NULL
);
--> statement-breakpoint
CREATE TABLE "audit_events" (
	"tenant" text NOT NULL,
	"session" text NOT NULL,
	"seq" integer NOT NULL,
	"ts" bigint NOT NULL,
	"type" text NOT NULL,
	"event_id" text NOT NULL,
	"user" text,
	"agent" text,
	"task" text,
	"run" text,
	"action" text,
	"model" text,
	"decision" text,
	"code" text,
	"rule" text,
	"cost_nanos" bigint DEFAULT 0 NOT NULL,
	"estimate_nanos" bigint,
	"hash" text NOT NULL,
	"prev" text NOT NULL,
	"event" jsonb NOT NULL,
	CONSTRAINT "audit_events_tenant_session_seq_pk" PRIMARY KEY("tenant","session","seq")
);
--> statement-breakpoint
CREATE TABLE "audit_sessions" (
	"tenant" text NOT NULL,
	"session" text NOT NULL,
	"user" text,
	"agent" text,
	"task" text,
	"opened_at" bigint,
	"last_ts" bigint,
	"state" text,
	"seq" integer DEFAULT 0 NOT NULL,
	"head_hash" text DEFAULT repeat('0', 64) NOT NULL,
	"spent_nanos" bigint DEFAULT 0 NOT NULL,
	"fold" jsonb,
	"known_seq" integer DEFAULT 0 NOT NULL,
	"problem_seq" integer,
	"problem" text,
	"problem_at" bigint,
	"updated_at" bigint NOT NULL,
	CONSTRAINT "audit_sessions_tenant_session_pk" PRIMARY KEY("tenant","session")
);
--> statement-breakpoint
CREATE INDEX "audit_erasures_tenant" ON "audit_erasures" USING btree ("tenant","requested_at");--> statement-breakpoint
CREATE INDEX "audit_events_tenant_ts" ON "audit_events" USING btree ("tenant","ts","session","seq");--> statement-breakpoint
CREATE INDEX "audit_events_tenant_user_ts" ON "audit_events" USING btree ("tenant","user","ts","session","seq");--> statement-breakpoint
CREATE INDEX "audit_events_tenant_agent_ts" ON "audit_events" USING btree ("tenant","agent","ts","session","seq");--> statement-breakpoint
CREATE INDEX "audit_sessions_tenant_user" ON "audit_sessions" USING btree ("tenant","user");