"""The five panels: Images, Forward process, Schedule, Training, Sampling."""
