-- The server's clock (the office's wall-clock time), taken when a ledger read begins.
SELECT NOW() AS ServerNow
