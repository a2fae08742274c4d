using System.Runtime.InteropServices;
using GpuExecutor.Composition;
using GpuExecutor.Configuration;
using GpuExecutor.Outcomes;
using GpuExecutor.Protocol;
using GpuExecutor.Verbs;

namespace GpuExecutor;

/// <summary>
/// `gpu-executor [--config PATH] VERB [ARGS]`. The runner appends `&lt;script&gt; &lt;stage&gt;` to run_args,
/// so global options come before the verb and the verb's own arguments after it.
/// </summary>
public static class CommandLine
{
    public const string ConfigEnvironmentVariable = "GPU_EXECUTOR_CONFIG";

    private const string Usage = """
        usage: gpu-executor [--config PATH] VERB [ARGS]

        Verbs called by GitLab Runner ([runners.custom] in config.toml):
          config                    print the runner's JSON (builds_dir, cache_dir, ...)
          prepare                   pull the image, create and start the job's containers
          run SCRIPT STAGE          run one stage script inside the job's container
          cleanup                   remove the job's containers (idempotent)

        Verbs for admins and developers:
          gc                        remove managed containers whose jobs are long gone
          gpus [--links]            list the host's GPUs and which job holds each; --links: how they connect
          datasets list             the dataset cache: objects, sizes, last use, in use
          datasets prune SIZE       trim the dataset cache to SIZE (e.g. 500g), least recently used first
          datasets prefetch SOURCE  fetch STORE://BUCKET/PREFIX/ into the cache ahead of jobs
          checkpoints list [RUN]    runs and their latest generation; with RUN, its generations
          checkpoints show RUN GEN  a generation's manifest
          checkpoints verify RUN [GEN] [--deep]   check every blob is there (--deep: and hashes right)
          checkpoints retain RUN [KEEP] [--orphans]  keep KEEP generations; --orphans also deletes
                                    blobs no manifest names (only with no job of the run running)
          checkpoints push RUN DIR  commit DIR as the run's next generation (seed a run)
          checkpoints pull RUN [GEN]  restore a generation into the run's directory on this host
          runs show RUN             the run's story: lease holder, segments (job, host, outcome, why),
                                    generations and who committed them, fallbacks, training time
          simulate JOB [OPTIONS]    play GitLab Runner: drive a job file through all the stages
          simulate-pipeline FILE [OPTIONS]  play a .gitlab-ci.yml's jobs in stage order on this runner,
                                    carrying artifacts; jobs for other runners are listed as skipped
          version                   print the version

        The config file is --config PATH, else $GPU_EXECUTOR_CONFIG, else /etc/gpu-executor/config.toml.
        """;

    public static async Task<int> RunAsync(string[] args, IRunnerEnvironment environment)
    {
        var stdout = Console.Out;
        var stderr = Console.Error;
        string? configPath = null;
        var index = 0;
        while (index < args.Length && args[index].StartsWith("--", StringComparison.Ordinal))
        {
            if (args[index] == "--config" && index + 1 < args.Length)
            {
                configPath = args[index + 1];
                index += 2;
            }
            else if (args[index] is "--help")
            {
                stdout.WriteLine(Usage);
                return 0;
            }
            else
            {
                stderr.WriteLine($"ERROR: unknown option '{args[index]}'.\n{Usage}");
                return ExitCodes.FromOutcome(new SystemFailureException("bad command line"), environment, TextWriter.Null);
            }
        }

        if (index >= args.Length)
        {
            stderr.WriteLine(Usage);
            return ExitCodes.FromOutcome(new SystemFailureException("no verb given"), environment, TextWriter.Null);
        }

        var verb = args[index];
        var verbArgs = args[(index + 1)..];
        configPath ??= environment.Get(ConfigEnvironmentVariable) is { Length: > 0 } fromEnvironment ? fromEnvironment : ExecutorConfig.DefaultPath;

        // The runner stops a stage with SIGTERM to the process group (cancel, timeout, shutdown).
        // Turn it into a cancellation so the verb can stop the work inside the container and still
        // exit with a protocol exit code, instead of dying by the signal.
        using var stop = new CancellationTokenSource();
        using var onTerm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, context => { context.Cancel = true; stop.Cancel(); });
        using var onInt = PosixSignalRegistration.Create(PosixSignal.SIGINT, context => { context.Cancel = true; stop.Cancel(); });

        if (verb == "version")
        {
            stdout.WriteLine($"gpu-executor {VersionInfo.Version}");
            return 0;
        }

        if (verb is "simulate" or "simulate-pipeline")
        {
            try
            {
                return ExitCodes.FromSimulation(await (verb == "simulate"
                    ? SimulateVerb.RunAsync(verbArgs, configPath, stdout, stop.Token)
                    : SimulatePipelineVerb.RunAsync(verbArgs, configPath, stdout, stop.Token)));
            }
            catch (Exception error)
            {
                return ExitCodes.FromSimulationFailure(error, stderr);
            }
        }

        try
        {
            var config = ConfigLoader.LoadFile(configPath);
            using var adapters = new CompositionRoot(config, Path.GetFullPath(configPath));
            var context = new VerbContext(config, adapters, environment, stderr, stop.Token);
            await (verb switch
            {
                "config" => ConfigAsync(context, stdout),
                "prepare" => PrepareVerb.RunAsync(context),
                "run" when verbArgs.Length == 2 => RunVerb.RunAsync(context, verbArgs[0], verbArgs[1]),
                "run" => throw new SystemFailureException($"run takes SCRIPT STAGE, got {verbArgs.Length} arguments."),
                "cleanup" => CleanupVerb.RunAsync(context),
                "gc" => GcVerb.RunAsync(context, stdout),
                "gpus" => GpusVerb.RunAsync(context, verbArgs, stdout),
                "datasets" => DatasetsVerb.RunAsync(context, verbArgs, stdout),
                "checkpoints" => CheckpointsVerb.RunAsync(context, verbArgs, stdout),
                "runs" => RunsVerb.RunAsync(context, verbArgs, stdout),
                _ => throw new SystemFailureException($"unknown verb '{verb}'.\n{Usage}"),
            });
            // A verb that returns has succeeded; every failure is an exception, mapped below.
            return ExitCodes.Success;
        }
        catch (Exception error)
        {
            return ExitCodes.FromOutcome(error, environment, stderr);
        }
    }

    private static Task ConfigAsync(VerbContext context, TextWriter stdout)
    {
        ConfigVerb.Run(context, stdout);
        return Task.CompletedTask;
    }
}
