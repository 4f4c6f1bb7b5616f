// One guest connection to the kube-apiserver, relayed (runs on the HOST). QEMU's user network starts
// it for every TCP connection the guest opens to the guestfwd address (run.sh: `guestfwd=...-cmd:`)
// with that connection on fd 0 (and 1 and 2: print nothing). It reads the apiserver's loopback port
// from the file named on its command line at connect time (the control plane may come up after the
// guest booted) and pipes both ways until either side closes.
//   node tcp-relay.mjs <file holding the port>
import { readFileSync } from 'node:fs';
import { Socket, connect } from 'node:net';

const guest = new Socket({ fd: 0, readable: true, writable: true });
let port;
try {
  port = Number(readFileSync(process.argv[2] ?? '', 'utf8').trim());
} catch {
  port = 0;
}
if (!Number.isInteger(port) || port <= 0 || port > 65535) {
  guest.destroy(); // no apiserver (yet): the guest sees the connection reset and retries
  process.exit(0);
}
const up = connect({ host: '127.0.0.1', port });
const close = () => {
  guest.destroy();
  up.destroy();
  process.exit(0);
};
guest.on('error', close).on('close', close);
up.on('error', close).on('close', close);
guest.pipe(up);
up.pipe(guest);
