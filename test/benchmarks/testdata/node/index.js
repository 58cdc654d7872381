// A no-op unless the event asks it to sleep (sleep_ms).
exports.handler = async (event) => {
  if (event && event.sleep_ms) {
    await new Promise((resolve) => setTimeout(resolve, event.sleep_ms));
  }
  return { ok: true };
};
