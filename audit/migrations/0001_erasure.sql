ALTER TABLE "audit_checkpoints" ADD COLUMN "alg" text DEFAULT 'Ed25519' NOT NULL;--> statement-breakpoint
ALTER TABLE "audit_erasures" ADD COLUMN "targets" jsonb;--> statement-breakpoint
ALTER TABLE "audit_events" ADD COLUMN "pii" jsonb;--> statement-breakpoint
CREATE INDEX "audit_erasures_subject" ON "audit_erasures" USING btree ("tenant","subject_digest");