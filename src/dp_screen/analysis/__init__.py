"""From the store to the picture a chemist reads: tables (``data``), trends and errors (``trends``), figures
(``plots``) and the HTML report (``report``). Science only: no workflow imports."""
