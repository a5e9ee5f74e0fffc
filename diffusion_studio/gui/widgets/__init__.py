"""What every panel uses: image panes, the plot theme, equations, labelled exports, file dialogs."""
