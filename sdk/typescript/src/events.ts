/**
 * The events of the API's streams, as the server writes them (`event:` and `data:` of each
 * Server-Sent Event; `id:` is the event's place in its stream's log).
 */
import type { StreamEvent } from './stream.js';
import type { components } from './generated/api.js';

type Usage = components['schemas']['Usage'];
type Message = components['schemas']['Message'];
type Failure = components['schemas']['RunError'];
type PendingToolCall = components['schemas']['PendingToolCall'];

/** The events of one step of a run (in a chat session, each also names its `reply_id`). */
export type StepEvent<Extra = object> =
  | StreamEvent<'step.started', { step: number } & Extra>
  | StreamEvent<'token', { step: number; delta: string } & Extra>
  | StreamEvent<'tool.called', { step: number; id: string; name: string; arguments: string } & Extra>
  | StreamEvent<
      'tool.result',
      { step: number; id: string; name: string; output: string; is_error: boolean } & Extra
    >
  | StreamEvent<'step.completed', { step: number; usage: Usage; tool_calls: number } & Extra>
  /** Tool calls wait for a human's answer (`runs.approve`); the run resumes once each has one. */
  | StreamEvent<
      'run.requires_action',
      { step: number; pending_tool_calls: PendingToolCall[]; expires_at: string } & Extra
    >;

/** A reply's end: the message as stored (status complete, failed or cancelled). */
type ReplyEnd = { reply_id: string; message: Message; usage: Usage | null; error: Failure | null };

/** An event of a chat session's stream. */
export type ChatStreamEvent =
  | StreamEvent<'message.created', { message: Message }>
  | StreamEvent<'reply.queued', { reply_id: string; run_id: string }>
  | StreamEvent<'reply.started', { reply_id: string; in_reply_to: string; run_id?: string }>
  | StreamEvent<'reply.resumed', { reply_id: string; run_id: string; after_step: number }>
  | StreamEvent<'token', { reply_id: string; delta: string; step?: number }>
  | Exclude<StepEvent<{ reply_id: string }>, { event: 'token' }>
  | StreamEvent<'reply.completed', ReplyEnd>
  | StreamEvent<'reply.failed', ReplyEnd>
  | StreamEvent<'reply.cancelled', ReplyEnd>;

/**
 * An event of a run's stream. A run that answers a chat message writes on its session's
 * stream, so its own stream shows the session's events of that reply instead.
 */
export type RunStreamEvent =
  | StreamEvent<'run.started', { run_id: string; agent_id: string }>
  | StreamEvent<'run.resumed', { after_step: number }>
  | StepEvent
  | StreamEvent<'run.completed', { output: string; usage: Usage }>
  | StreamEvent<'run.failed', { error: Failure }>
  | StreamEvent<'run.cancelled', { steps: number }>
  | Exclude<ChatStreamEvent, { event: 'token' | StepEvent['event'] }>;

/** The events after which a run's stream has nothing more to say. */
export const RUN_ENDS: ReadonlySet<string> = new Set([
  'run.completed',
  'run.failed',
  'run.cancelled',
  'reply.completed',
  'reply.failed',
  'reply.cancelled',
]);

/** The events that end a chat reply. */
export const REPLY_ENDS: ReadonlySet<string> = new Set(['reply.completed', 'reply.failed', 'reply.cancelled']);
