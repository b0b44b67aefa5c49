"""Analysis of screening results: tables, trends and plots. No workflow imports."""
