"""portex-pay: the Telegram Stars payment service behind the Portex SDK's `portex.pay`."""
