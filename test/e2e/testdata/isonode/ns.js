// Reports the sandbox this Node instance runs in, as the isolation
// tests' Python "procs" handler does.
const fs = require("fs");

const ns = (kind) => fs.readlinkSync("/proc/self/ns/" + kind);

exports.handler = async () => ({
  Function: process.env.AWS_LAMBDA_FUNCTION_NAME,
  Pid: process.pid,
  Pidns: ns("pid"),
  Mntns: ns("mnt"),
  Netns: ns("net"),
  Utsns: ns("uts"),
  Ipcns: ns("ipc"),
});
