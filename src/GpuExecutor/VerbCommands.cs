using System.CommandLine;
using System.CommandLine.Completions;
using GpuExecutor.AdminLog;
using GpuExecutor.Composition;
using GpuExecutor.Configuration;
using GpuExecutor.Doctor;
using GpuExecutor.Outcomes;
using GpuExecutor.Protocol;
using GpuExecutor.Verbs;

namespace GpuExecutor;

/// <summary>
/// Every verb's command line, declared once: its arguments, options, help text and example. Each
/// action runs the verb and turns its outcome into an exit code through <see cref="ExitCodes"/>,
/// the one place that maps outcomes; the verbs themselves take typed values and never parse.
/// </summary>
public sealed class VerbCommands
{
    private readonly IRunnerEnvironment _environment;
    private readonly TextWriter _stdout;
    private readonly TextWriter _stderr;
    private readonly CancellationToken _stop;

    private readonly Option<string> _config = new("--config")
    {
        Description = $"the executor's config file (else ${CommandLine.ConfigEnvironmentVariable}, else {ExecutorConfig.DefaultPath})",
        HelpName = "PATH",
        Recursive = true,
    };

    public RootCommand Root { get; }

    public VerbCommands(IRunnerEnvironment environment, TextWriter stdout, TextWriter stderr, CancellationToken stop)
    {
        _environment = environment;
        _stdout = stdout;
        _stderr = stderr;
        _stop = stop;
        Root = new RootCommand("""
            gpu-executor: a GitLab Runner custom executor that runs each CI job in its own Docker
            container with exclusive GPUs, streamed datasets and checkpoints that survive the job.
            The runner calls config, prepare, run and cleanup ([runners.custom] in its config.toml);
            the other verbs are for admins. Exit codes: see README.md, "Exit codes".
            """);
        // Only the completion directive ([suggest]); the others would give a leading "[...]"
        // argument a meaning the runner never intended.
        Root.Directives.Clear();
        Root.Directives.Add(new SuggestDirective());
        Root.Options.Add(_config);

        foreach (var command in ProtocolVerbs().Concat(AdminVerbs()).Concat(SimulationVerbs()))
            Root.Subcommands.Add(command);
    }

    /// <summary>The simulators map a bad command line to EX_USAGE, not to the runner's system failure.</summary>
    public static bool IsSimulation(Command command) => command.Name is "simulate" or "simulate-pipeline";

    private IEnumerable<Command> ProtocolVerbs()
    {
        yield return Verb("config", """
            Print the runner's JSON (builds_dir, cache_dir, driver) on stdout. Called by GitLab Runner.
            Example: gpu-executor --config /etc/gpu-executor/config.toml config
            """, [], (_, context) =>
        {
            ConfigVerb.Run(context, _stdout);
            return Task.CompletedTask;
        });

        yield return Verb("prepare", """
            Pull the image, take the job's GPUs, bring its datasets and checkpoint, and start its
            containers. Called by GitLab Runner with the job in JOB_RESPONSE_FILE.
            Example: gpu-executor --config /etc/gpu-executor/config.toml prepare
            """, [], (_, context) => PrepareVerb.RunAsync(context));

        var script = new Argument<string>("SCRIPT") { Description = "the stage's script, a file on the host written by the runner" };
        var stage = new Argument<string>("STAGE") { Description = "the stage's name (prepare_script, get_sources, build_script, ...)" };
        yield return Verb("run", """
            Run one stage script inside the job's container. Called by GitLab Runner.
            Example: gpu-executor --config /etc/gpu-executor/config.toml run /tmp/script build_script
            """, [script, stage], (parse, context) => RunVerb.RunAsync(context, parse.GetValue(script)!, parse.GetValue(stage)!));

        yield return Verb("cleanup", """
            Remove the job's containers, views and GPU claims (idempotent). Called by GitLab Runner.
            Example: gpu-executor --config /etc/gpu-executor/config.toml cleanup
            """, [], (_, context) => CleanupVerb.RunAsync(context));
    }

    private IEnumerable<Command> AdminVerbs()
    {
        var gcJob = new Option<string?>("--job") { Description = "only what this job left behind (its containers once past its deadline, its directories, its agent)", HelpName = "JOB_ID" };
        yield return Verb("gc", """
            Remove managed containers and builds directories whose jobs are long gone.
            The package runs it hourly (gpu-executor-gc.timer).
            Example: gpu-executor gc --job 4242
            """, [gcJob], (parse, context) => GcVerb.RunAsync(context, parse.GetValue(gcJob), _stdout));

        var logsTarget = new Argument<string>("JOB|RUN") { Description = "a job id (its logs on this host) or a run key (its jobs' logs in the store)" };
        var followStep = new Option<bool>("--follow", "-f") { Description = "follow a job's step while it prints, until the step ends" };
        yield return Verb("logs", """
            Print a job's whole step logs, as the steps printed them, past the runner's
            output_limit: from this host by job id, or from the store by run key.
            Example: gpu-executor logs 4242 --follow
            """, [logsTarget, followStep], (parse, context) => LogsVerb.RunAsync(context, parse.GetValue(logsTarget)!, parse.GetValue(followStep), _stderr));

        var print = new Option<bool>("--print") { Description = "print the metrics instead of writing the file" };
        yield return Verb("metrics", """
            Write the host's Prometheus textfile into [metrics] textfile_dir now.
            prepare, cleanup, gc, the GPU sampler and the checkpoint agent rewrite it
            as they go; the package's timer (gpu-executor-metrics.timer) every 30 s.
            Example: gpu-executor metrics --print
            """, [print], (parse, context) => MetricsVerb.RunAsync(context, parse.GetValue(print), _stdout));

        var links = new Option<bool>("--links") { Description = "also show how the GPUs connect, as the allocator ranks the links" };
        var gpus = Verb("gpus", """
            List the host's GPUs and which job holds each.
            Example: gpu-executor gpus --links
            """, [links], (parse, context) => GpusVerb.RunAsync(context, parse.GetValue(links), _stdout));
        var sampledJob = new Argument<string>("JOB_ID");
        var sample = Verb("sample", "The job's GPU sampler; prepare starts it, detached.", [sampledJob], (parse, context) => GpusVerb.SampleAsync(context, parse.GetValue(sampledJob)!));
        sample.Hidden = true;
        gpus.Subcommands.Add(sample);
        yield return gpus;

        yield return DatasetsVerbs();
        yield return CheckpointsVerbs();

        var runKey = RunArgument();
        yield return Group("runs", "A training run's story across jobs and hosts.",
            Verb("show", """
                The run's lease holder, segments (job, host, outcome, why), generations and who
                committed them, fallbacks and training time.
                Example: gpu-executor runs show p42-llama-7b-sft
                """, [runKey], (parse, context) => RunsVerb.ShowAsync(context, parse.GetValue(runKey)!, _stdout)));

        var runnerConfig = new Option<string?>("--runner-config") { Description = "also check GitLab Runner's config.toml: every [[runners]] entry that calls this binary", HelpName = "PATH" };
        var doctorJson = new Option<bool>("--json") { Description = "the findings as JSON" };
        var doctor = WithSymbols(new Command("doctor", $"""
            Check every link a job on this host depends on: the config, Docker (live-restore, init), the
            NVIDIA runtime and the pool's GPUs, the directories and their free space, each store, the
            clock against the store's, the GitLab token, and with --runner-config the runner's entries.
            One line per check: PASS, WARN or FAIL, what was found, and the fix. Exit {ExitCodes.FindingsExitCode} when any failed.
            Example: gpu-executor doctor --runner-config /etc/gitlab-runner/config.toml
            """), [runnerConfig, doctorJson]);
        doctor.SetAction(async (parse, _) =>
        {
            var clock = System.Diagnostics.Stopwatch.StartNew();
            var (config, findings) = await DoctorVerb.RunAsync(ConfigPath(parse), parse.GetValue(runnerConfig), parse.GetValue(doctorJson), _stdout, _stop);
            var failed = findings.Where(finding => finding.Status == DoctorStatus.Fail).Select(finding => finding.Check).ToList();
            var outcome = failed.Count == 0 ? null : new FindingsException($"doctor: {failed.Count} check(s) failed: {string.Join(", ", failed)}");
            var exitCode = outcome is null ? ExitCodes.Success : ExitCodes.FindingsExitCode;
            if (config is not null)
                VerbEvents.Record(config, _environment, "doctor", new VerbFacts(), outcome, exitCode, clock.Elapsed);
            return exitCode;
        });
        yield return doctor;

        var url = new Option<string>("--url") { Description = "the GitLab instance, e.g. https://gitlab.example.com", Required = true, HelpName = "URL" };
        var name = new Option<string>("--name") { Description = "the runner's name (the host and its pool, say gpu-host-01-a100)", Required = true };
        var tags = new Option<string?>("--tags") { Description = "the CI tags jobs pick this runner by", HelpName = "A,B" };
        var tokenVariable = new Option<string>("--token-env") { Description = "the environment variable holding the runner authentication token", DefaultValueFactory = _ => "RUNNER_TOKEN", HelpName = "VAR" };
        var template = new Option<string?>("--template") { Description = "where to write the runner template (default: beside the executor config)", HelpName = "PATH" };
        var gitlabRunner = new Option<string>("--gitlab-runner") { Description = "the gitlab-runner program", DefaultValueFactory = _ => "gitlab-runner", HelpName = "PATH" };
        var dryRun = new Option<bool>("--dry-run") { Description = "write the template and print the command instead of running it" };
        var buildsDir = new Option<string?>("--builds-dir") { Description = "the runner's builds_dir (default and required: [builds].container_dir)", HelpName = "DIR" };
        var cacheDir = new Option<string?>("--cache-dir") { Description = "the runner's cache_dir (default and required: [cache].container_dir)", HelpName = "DIR" };
        var gracefulKill = new Option<long?>("--graceful-kill-timeout") { Description = "the runner's SIGTERM-to-SIGKILL wait (default: run.runner_graceful_kill_timeout_seconds)", HelpName = "SECONDS" };
        yield return Verb("register", """
            Register a GitLab runner that calls this executor with this config: writes the runner
            template (builds_dir, cache_dir, the four *_exec/*_args, graceful_kill_timeout) so it agrees
            with the config, refuses an override that would not, and runs gitlab-runner register with
            the token from $RUNNER_TOKEN (never an argument). One register per runner and config.
            Example: RUNNER_TOKEN=glrt-… gpu-executor --config /etc/gpu-executor/config.toml register --url https://gitlab.example.com --name gpu-host-01 --tags a100-x8
            """, [url, name, tags, tokenVariable, template, gitlabRunner, dryRun, buildsDir, cacheDir, gracefulKill],
            (parse, context) => RegisterVerb.RunAsync(context, new RegisterVerb.Request(parse.GetValue(url)!, parse.GetValue(name)!, parse.GetValue(tags),
                parse.GetValue(tokenVariable)!, parse.GetValue(template), parse.GetValue(gitlabRunner)!, parse.GetValue(dryRun), parse.GetValue(buildsDir),
                parse.GetValue(cacheDir), parse.GetValue(gracefulKill)), ConfigPath(parse), _stdout));

        var eventsJob = new Option<long?>("--job") { Description = "only this job's lines", HelpName = "N" };
        var since = new Option<string?>("--since") { Description = "only lines since then: 90s, 30m, 1h, 2d back, or a time", HelpName = "WHEN" };
        var follow = new Option<bool>("--follow", "-f") { Description = "then print new lines as they come, until Ctrl-C" };
        var json = new Option<bool>("--json") { Description = "the lines as stored, one JSON object each" };
        yield return Verb("events", $"""
            The admin log ({ExecutorConfig.DefaultStateDir}/{EventLog.DirectoryName}/{EventLog.FileName}): one line per verb call of every
            job on this host, with its outcome, duration, GPUs, datasets and checkpoint; secrets redacted.
            Example: gpu-executor events --job 4242 --since 2h
            """, [eventsJob, since, follow, json],
            (parse, context) => EventsVerb.RunAsync(context, parse.GetValue(eventsJob), parse.GetValue(since), parse.GetValue(follow), parse.GetValue(json), _stdout),
            logged: false);

        var version = new Command("version", "Print the version (the same as --version).\nExample: gpu-executor version");
        version.SetAction(_ =>
        {
            _stdout.WriteLine($"gpu-executor {VersionInfo.Version}");
            return ExitCodes.Success;
        });
        yield return version;
    }

    private Command DatasetsVerbs()
    {
        var size = new Argument<string>("SIZE") { Description = "the size to trim to: bytes, or 500g, 2t, 0" };
        var source = new Argument<string>("SOURCE") { Description = "STORE://BUCKET/PREFIX/, as a DATASETS line names it" };
        var job = new Argument<string>("JOB_ID");
        var stream = Verb("stream", "The detached fetcher of a job's streamed datasets; prepare starts it.", [job],
            (parse, context) => DatasetsVerb.StreamAsync(context, parse.GetValue(job)!));
        stream.Hidden = true;
        return Group("datasets", "The host's dataset cache.",
            Verb("list", "Objects in the cache, their sizes, last use, and whether a job uses them.\nExample: gpu-executor datasets list", [],
                (_, context) =>
                {
                    DatasetsVerb.List(context, _stdout);
                    return Task.CompletedTask;
                }),
            Verb("prune", "Trim the cache to SIZE, least recently used first; objects in use stay.\nExample: gpu-executor datasets prune 500g", [size],
                (parse, context) =>
                {
                    DatasetsVerb.Prune(context, parse.GetValue(size)!, _stdout);
                    return Task.CompletedTask;
                }),
            Verb("prefetch", "Fetch a source into the cache ahead of the jobs that need it.\nExample: gpu-executor datasets prefetch s3://imagenet/train/", [source],
                (parse, context) => DatasetsVerb.PrefetchAsync(context, parse.GetValue(source)!, _stdout)),
            stream);
    }

    private Command CheckpointsVerbs()
    {
        var listRun = RunArgument(required: false);
        var showRun = RunArgument();
        var showGeneration = GenerationArgument();
        var verifyRun = RunArgument();
        var verifyGeneration = GenerationArgument(required: false);
        var deep = new Option<bool>("--deep") { Description = "also read every blob and check its hash" };
        var retainRun = RunArgument();
        var keep = new Argument<string?>("KEEP") { Description = "generations to keep (default: checkpoints.keep_generations)", Arity = ArgumentArity.ZeroOrOne };
        var orphans = new Option<bool>("--orphans") { Description = "also delete blobs no manifest names (only while no job of the run runs)" };
        var pushRun = RunArgument();
        var directory = new Argument<string>("DIR") { Description = "the directory to commit" };
        var pullRun = RunArgument();
        var pullGeneration = GenerationArgument(required: false);
        var agentJob = new Argument<string>("JOB_ID");
        var agentRun = RunArgument();
        var agentContainer = new Argument<string>("CONTAINER");
        var agent = Verb("agent", "The checkpoint sync agent; prepare starts it, detached.", [agentJob, agentRun, agentContainer],
            (parse, context) => CheckpointsVerb.AgentAsync(context, parse.GetValue(agentJob)!, parse.GetValue(agentRun)!, parse.GetValue(agentContainer)!));
        agent.Hidden = true;

        return Group("checkpoints", "Training runs' checkpoints in the checkpoint store.",
            Verb("list", "The runs and their latest generation; with RUN, its generations.\nExample: gpu-executor checkpoints list p42-llama-7b-sft", [listRun],
                (parse, context) => CheckpointsVerb.ListAsync(context, parse.GetValue(listRun), _stdout)),
            Verb("show", "A generation's manifest.\nExample: gpu-executor checkpoints show p42-llama-7b-sft 42", [showRun, showGeneration],
                (parse, context) => CheckpointsVerb.ShowAsync(context, parse.GetValue(showRun)!, parse.GetValue(showGeneration)!, _stdout)),
            Verb("verify", $"Check that every blob of the run's generations (or one) is there; exit {ExitCodes.FindingsExitCode} on findings.\nExample: gpu-executor checkpoints verify p42-llama-7b-sft --deep", [verifyRun, verifyGeneration, deep],
                (parse, context) => CheckpointsVerb.VerifyAsync(context, parse.GetValue(verifyRun)!, parse.GetValue(verifyGeneration), parse.GetValue(deep), _stdout)),
            Verb("retain", "Keep the newest KEEP generations and delete the rest.\nExample: gpu-executor checkpoints retain p42-llama-7b-sft 2", [retainRun, keep, orphans],
                (parse, context) => CheckpointsVerb.RetainAsync(context, parse.GetValue(retainRun)!, parse.GetValue(keep), parse.GetValue(orphans), _stdout)),
            Verb("push", "Commit DIR as the run's next generation (to seed a run).\nExample: gpu-executor checkpoints push p42-llama-7b-sft ./pretrained", [pushRun, directory],
                (parse, context) => CheckpointsVerb.PushAsync(context, parse.GetValue(pushRun)!, parse.GetValue(directory)!, _stdout)),
            Verb("pull", "Restore a generation (default: the newest) into the run's directory on this host.\nExample: gpu-executor checkpoints pull p42-llama-7b-sft", [pullRun, pullGeneration],
                (parse, context) => CheckpointsVerb.PullAsync(context, parse.GetValue(pullRun)!, parse.GetValue(pullGeneration), _stdout)),
            agent);
    }

    private IEnumerable<Command> SimulationVerbs()
    {
        var jobFile = new Argument<string>("JOB.json") { Description = "the job: its variables, image, steps and timeout" };
        var executor = LastWins(new Option<string?>("--executor") { Description = "executor binary to drive (default: this one)", HelpName = "PATH" }, text => text);
        var cancelAfter = Seconds("--cancel-after", "cancel the job this long into its first user step");
        var gracefulKill = Seconds("--graceful-kill-timeout", "the runner's SIGTERM-to-SIGKILL wait (default 600)");
        var forceKill = Seconds("--force-kill-timeout", "the wait after SIGKILL (default 10)");
        var cleanupWait = Seconds("--timeout-cleanup-wait", "on job timeout, wait this long before cleanup (default 300)");
        var retryDelay = Seconds("--prepare-retry-delay", "the pause between preparation attempts (default 3)");
        var jobId = LastWins(new Option<long?>("--job-id") { Description = "the job id to use (default: the job file's, else random)", HelpName = "N" },
            text => long.TryParse(text, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var id) && id > 0 ? id : null);
        var result = LastWins(new Option<string?>("--result") { Description = "write the outcome and every call as JSON", HelpName = "FILE" }, text => text);
        yield return Simulation("simulate", """
            Play GitLab Runner: drive a job file through config, prepare, every stage and cleanup.
            Exit 0 success, 1 failed, 2 system failure, 3 canceled, 4 timeout; 64 bad usage.
            Example: gpu-executor --config dev.toml simulate examples/jobs/train.json --cancel-after 20
            """, [jobFile, executor, cancelAfter, gracefulKill, forceKill, cleanupWait, retryDelay, jobId, result],
            (parse, configPath) => SimulateVerb.RunAsync(new SimulateVerb.Request(parse.GetValue(jobFile)!, parse.GetValue(executor), parse.GetValue(cancelAfter),
                parse.GetValue(gracefulKill), parse.GetValue(forceKill), parse.GetValue(cleanupWait), parse.GetValue(retryDelay), parse.GetValue(jobId), parse.GetValue(result)),
                configPath, _stdout, _stop));

        var pipelineFile = new Argument<string>("PIPELINE.yml");
        var repository = new Option<string?>("--repository") { Description = "where include: local: paths start (default: the current directory)", HelpName = "DIR" };
        var sources = new Option<string?>("--sources") { Description = "files every job finds in CI_PROJECT_DIR (default: none)", HelpName = "DIR" };
        var runnerTags = new Option<string?>("--runner-tags") { Description = "the tags of the runner played here (default: gpu)", HelpName = "A,B" };
        var source = new Option<string?>("--source") { Description = "CI_PIPELINE_SOURCE: push (default), schedule, trigger, ...", HelpName = "NAME" };
        var variable = new Option<string[]>("--variable") { Description = "a pipeline variable, over the file's (repeatable)", HelpName = "KEY=VALUE" };
        var firstJobId = new Option<long?>("--first-job-id") { Description = "the first job's id (default 1000)", HelpName = "N" };
        var cancel = new Option<string?>("--cancel") { Description = "cancel that job this long into its first user step", HelpName = "JOB=SECONDS" };
        var pipelineResult = new Option<string?>("--result") { Description = "write each job's outcome as JSON", HelpName = "FILE" };
        yield return Simulation("simulate-pipeline", """
            Play a .gitlab-ci.yml's jobs in stage order on this runner, carrying artifacts; jobs for
            other runners are listed as skipped. Exit 0 when no job that ran failed, else 1.
            Example: gpu-executor simulate-pipeline examples/mlops/.gitlab-ci.yml --cancel train=30
            """, [pipelineFile, repository, sources, runnerTags, source, variable, firstJobId, cancel, pipelineResult],
            (parse, configPath) => SimulatePipelineVerb.RunAsync(new SimulatePipelineVerb.Request(parse.GetValue(pipelineFile)!, parse.GetValue(repository),
                parse.GetValue(sources), parse.GetValue(runnerTags), parse.GetValue(source), parse.GetValue(variable) ?? [], parse.GetValue(firstJobId),
                parse.GetValue(cancel), parse.GetValue(pipelineResult)), configPath, _stdout, _stop));
    }

    private string ConfigPath(ParseResult parse) =>
        parse.GetValue(_config) is { Length: > 0 } fromOption ? fromOption
        : _environment.Get(CommandLine.ConfigEnvironmentVariable) is { Length: > 0 } fromEnvironment ? fromEnvironment
        : ExecutorConfig.DefaultPath;

    /// <summary>
    /// A verb that reads the executor's config and works through its adapters. Its call becomes
    /// one line of the admin log, whatever the outcome, unless <paramref name="logged"/> is false.
    /// </summary>
    private Command Verb(string name, string description, Symbol[] symbols, Func<ParseResult, VerbContext, Task> body, bool logged = true)
    {
        var command = WithSymbols(new Command(name, description), symbols);
        command.SetAction(async (parse, _) =>
        {
            var clock = System.Diagnostics.Stopwatch.StartNew();
            var facts = new VerbFacts();
            ExecutorConfig? config = null;
            CompositionRoot? adapters = null;
            Exception? failure = null;
            try
            {
                var configPath = ConfigPath(parse);
                config = ConfigLoader.LoadFile(configPath);
                adapters = new CompositionRoot(config, Path.GetFullPath(configPath));
                await body(parse, new VerbContext(config, adapters, _environment, _stderr, _stop, facts));
            }
            catch (Exception error)
            {
                failure = error;
            }
            using (adapters)
            {
                // A verb that returns has succeeded; every failure is an exception, mapped here.
                var exitCode = ExitCodes.FromOutcome(failure, _environment, _stderr);
                var verb = VerbPath(parse.CommandResult.Command);
                if (logged && config is not null)
                    VerbEvents.Record(config, _environment, verb, facts, failure, exitCode, clock.Elapsed);
                if (logged && config is not null && adapters is not null)
                    await VerbMetrics.RecordAsync(config, adapters, verb, failure);
                return exitCode;
            }
        });
        return command;
    }

    private static string VerbPath(Command command) =>
        command.Parents.OfType<Command>().FirstOrDefault() is { } parent and not RootCommand ? $"{VerbPath(parent)} {command.Name}" : command.Name;

    private Command Simulation(string name, string description, Symbol[] symbols, Func<ParseResult, string, Task<string>> body)
    {
        var command = WithSymbols(new Command(name, description), symbols);
        command.SetAction(async (parse, _) =>
        {
            try
            {
                return ExitCodes.FromSimulation(await body(parse, ConfigPath(parse)));
            }
            catch (Exception error)
            {
                return ExitCodes.FromSimulationFailure(error, _stderr);
            }
        });
        return command;
    }

    private static Command Group(string name, string description, params Command[] subcommands)
    {
        var group = new Command(name, description);
        foreach (var subcommand in subcommands)
            group.Subcommands.Add(subcommand);
        return group;
    }

    private static Command WithSymbols(Command command, Symbol[] symbols)
    {
        foreach (var symbol in symbols)
        {
            switch (symbol)
            {
                case Argument argument: command.Arguments.Add(argument); break;
                case Option option: command.Options.Add(option); break;
                default: throw new ArgumentException($"not an argument or option: {symbol.Name}");
            }
        }
        return command;
    }

    private static Argument<string?> RunArgument(bool required = true) => new("RUN")
    {
        Description = "the run key, as `checkpoints list` shows it (p<project id>-<CHECKPOINT_RUN_KEY>, or one made from the project, ref and job name)",
        Arity = required ? ArgumentArity.ExactlyOne : ArgumentArity.ZeroOrOne,
    };

    private static Argument<string?> GenerationArgument(bool required = true) => new("GENERATION")
    {
        Description = "a generation number",
        Arity = required ? ArgumentArity.ExactlyOne : ArgumentArity.ZeroOrOne,
    };

    private static Option<double?> Seconds(string name, string description) =>
        LastWins(new Option<double?>(name) { Description = description, HelpName = "SECONDS" },
            text => double.TryParse(text, System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out var seconds) && seconds >= 0 ? seconds : null);

    /// <summary>
    /// An option that may be given more than once, the last one counting, as the simulators took
    /// them before (a script's defaults first, a caller's overrides after). A value that does not
    /// parse is a usage error naming it.
    /// </summary>
    private static Option<T> LastWins<T>(Option<T> option, Func<string, T?> parse)
    {
        option.Arity = ArgumentArity.OneOrMore;
        option.CustomParser = result =>
        {
            var text = result.Tokens[^1].Value;
            if (parse(text) is { } value)
                return value;
            result.AddError($"{option.Name}: '{text}' is not a valid value.");
            return default!;
        };
        return option;
    }
}
