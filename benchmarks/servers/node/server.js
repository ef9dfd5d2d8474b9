// Node `ws` peer for the wsplugin benchmarks.
//   node server.js PORT echo|broadcast [deflate]
// echo: every message comes back with the same type.
// broadcast: every message goes to every open client, sender included
// (the loop over wss.clients from the ws README). ws defaults otherwise
// (permessage-deflate off on the server); bufferutil installed, which ws
// uses for masking when present (the ws README recommends it).
// deflate: perMessageDeflate on, with threshold 0 (ws's default threshold of
// 1024 bytes would send the benchmark's 64-byte messages uncompressed).
'use strict';
const { WebSocketServer, WebSocket } = require('ws');

const port = Number(process.argv[2]);
const mode = process.argv[3] || 'echo';
const deflate = process.argv[4] === 'deflate';
const wss = new WebSocketServer({
  host: '127.0.0.1',
  port,
  perMessageDeflate: deflate ? { threshold: 0 } : false,
});

wss.on('connection', (ws) => {
  ws.on('error', () => {});
  if (mode === 'echo') {
    ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
  } else {
    ws.on('message', (data, isBinary) => {
      for (const client of wss.clients) {
        if (client.readyState === WebSocket.OPEN) client.send(data, { binary: isBinary });
      }
    });
  }
});
