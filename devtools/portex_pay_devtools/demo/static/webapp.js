// The demo's stand-in for Telegram.WebApp (development only; the demo's bot is the sandbox's):
// initData for the picked user, signed by the sandbox bot through /demo/init-data, and
// openInvoice as a dialog whose Pay button drives the sandbox's checkout (/demo/invoice), so the
// bot sees what it would see in Telegram.

/** POSTs JSON to one of the demo's development routes; the parsed answer. */
async function demoCall(route, body) {
  const response = await fetch(`/demo/${route}`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  if (!response.ok) throw new Error(`${route}: ${response.status} ${await response.text()}`);
  return response.json();
}

/**
 * A Telegram.WebApp for `userId`: initData, initDataUnsafe.user and openInvoice.
 * @param {number} userId
 * @param {HTMLDialogElement} dialog the invoice dialog (#invoice-pay, -cancel, -fail, -text)
 */
export async function sandboxWebApp(userId, dialog) {
  const { init_data: initData } = await demoCall("init-data", { user_id: userId });
  const user = JSON.parse(new URLSearchParams(initData).get("user"));
  return {
    initData,
    initDataUnsafe: { user },
    openInvoice(url, callback) {
      openDialog(dialog, url, userId).then(callback);
    },
  };
}

/** Shows the dialog until a button is pressed; resolves with Telegram's invoice status. */
function openDialog(dialog, url, userId) {
  dialog.querySelector("#invoice-text").textContent = `Invoice ${url}`;
  dialog.showModal();
  return new Promise((resolve) => {
    const close = (status) => {
      dialog.close();
      resolve(status);
    };
    // Pay: the sandbox's answer is the status; a failing helper closes the invoice as "failed".
    dialog.querySelector("#invoice-pay").onclick = () =>
      demoCall("invoice", { link: url, user_id: userId }).then(
        (answer) => close(answer.status),
        () => close("failed"),
      );
    // Closing an invoice unpaid, cancelled or failed, involves no one: Telegram tells the bot
    // nothing, and the order stays pending.
    dialog.querySelector("#invoice-fail").onclick = () => close("failed");
    dialog.querySelector("#invoice-cancel").onclick = () => close("cancelled");
    dialog.oncancel = (event) => {
      event.preventDefault();
      close("cancelled");
    };
  });
}
