// A small page bundled from the SDK: it streams a chat reply through useStreamingChat.
// Its token comes from its own backend (`/token`), as a browser app's should.
import { createRoot } from 'react-dom/client';

import { createClient } from '../../src/index.js';
import { DgiDgiProvider, useStreamingChat } from '../../src/react.js';

const params = new URLSearchParams(location.hash.slice(1));
const sessionId = params.get('session')!;

createClient({
  baseURL: '/api/v1',
  getToken: async () => (await fetch('/token')).text(),
});

function Chat() {
  const { currentText, isStreaming, error, streamMessage } = useStreamingChat();
  return (
    <div>
      <button id="send" onClick={() => void streamMessage({ sessionId, content: 'Hello from Chromium' })}>
        Send
      </button>
      <p id="state">{isStreaming ? 'streaming' : 'idle'}</p>
      <p id="text">{currentText}</p>
      <p id="error">{error?.message ?? ''}</p>
    </div>
  );
}

createRoot(document.getElementById('root')!).render(
  <DgiDgiProvider>
    <Chat />
  </DgiDgiProvider>,
);
