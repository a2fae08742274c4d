using GpuExecutor.Simulation;

namespace GpuExecutor.Tests;

/// <summary>
/// The simulator's reading of pipeline files: the example MLOps pipeline with its components
/// expanded, inputs given and defaulted, the including file's keys merged over the component's,
/// and what it cannot play refused by name.
/// </summary>
public sealed class PipelineDefinitionTests : IDisposable
{
    private readonly string _root = Directory.CreateTempSubdirectory("gpu-executor-pipeline-file").FullName;

    private string Write(string relative, string text)
    {
        var path = Path.Combine(_root, relative);
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        File.WriteAllText(path, text);
        return path;
    }

    [Fact]
    public void The_example_pipeline_expands_its_components_in_stage_order_with_the_inputs_and_the_merged_variables()
    {
        var pipeline = PipelineDefinition.Load(Path.Combine(RepositoryRoot.Path, "examples", "mlops", ".gitlab-ci.yml"), RepositoryRoot.Path);

        Assert.Equal(["train", "evaluate", "register", "package", "deploy", "inference", "cleanup", "drift"], pipeline.Stages);
        Assert.Equal(["train", "evaluate", "register-model", "package-serving-image", "deploy", "batch-inference", "serving-check", "cleanup", "retrain-trigger"], pipeline.Jobs.Select(job => job.Name));
        var train = pipeline.Jobs[0];
        Assert.Equal("gpu-executor-examples/pytorch:latest", train.Image);
        Assert.Equal(["gpu"], train.Tags);
        Assert.Equal("on", train.Variables["CHECKPOINTS"]);
        Assert.Equal("digits-cnn", train.Variables["CHECKPOINT_RUN_KEY"]);
        Assert.Equal("s3://datasets/digits/ -> /data/digits", train.Variables["DATASETS"]);
        // The pipeline's own keys merged into the component's job.
        Assert.Equal("8", train.Variables["EPOCHS"]);
        Assert.Equal(24 * 3600, train.TimeoutSeconds);
        Assert.Equal(["model/", ".gpu-executor/gpu-usage.csv"], train.ArtifactPaths);
        Assert.Equal(["cd examples/pytorch && python3 train.py"], train.Script);

        var evaluate = pipeline.Jobs.Single(job => job.Name == "evaluate");
        Assert.Equal([("train", true)], evaluate.Needs);
        Assert.Contains(evaluate.Script, line => line.Contains("\"model/metrics.json\" \"accuracy\" \"0.9\"", StringComparison.Ordinal));
        Assert.Equal([("train", true), ("evaluate", false)], pipeline.Jobs.Single(job => job.Name == "register-model").Needs);
        Assert.Equal(["docker"], pipeline.Jobs.Single(job => job.Name == "package-serving-image").Tags);
        Assert.Equal("manual", pipeline.Jobs.Single(job => job.Name == "cleanup").When);
        Assert.Equal(["$CI_PIPELINE_SOURCE == \"schedule\""], pipeline.Jobs.Single(job => job.Name == "retrain-trigger").RuleConditions);
    }

    [Fact]
    public void A_component_input_without_default_or_value_an_undeclared_input_and_extends_are_refused_by_name()
    {
        Write("templates/c.yml", "spec:\n  inputs:\n    needed:\n      description: x\n---\njob:\n  stage: test\n  script: echo $[[ inputs.needed ]]\n");
        var missing = Write("missing.yml", "stages: [test]\ninclude:\n  - local: templates/c.yml\n");
        Assert.Contains("input 'needed' has no default", Assert.Throws<PipelineFileException>(() => PipelineDefinition.Load(missing, _root)).Message);

        var unknown = Write("unknown.yml", "stages: [test]\ninclude:\n  - local: templates/c.yml\n    inputs:\n      needed: a\n      other: b\n");
        Assert.Contains("declares no input 'other'", Assert.Throws<PipelineFileException>(() => PipelineDefinition.Load(unknown, _root)).Message);

        var extends = Write("extends.yml", "stages: [test]\n.base:\n  script: echo\njob:\n  extends: .base\n  script: echo\n");
        Assert.Contains("extends is not simulated", Assert.Throws<PipelineFileException>(() => PipelineDefinition.Load(extends, _root)).Message);

        var outside = Write("outside.yml", "stages: [test]\ninclude:\n  - local: ../etc/passwd\n");
        Assert.Contains("no such file in the repository", Assert.Throws<PipelineFileException>(() => PipelineDefinition.Load(outside, _root)).Message);

        var remote = Write("remote.yml", "stages: [test]\ninclude:\n  - remote: https://example.com/x.yml\n");
        Assert.Contains("only `include: local:` is simulated", Assert.Throws<PipelineFileException>(() => PipelineDefinition.Load(remote, _root)).Message);

        var given = Write("given.yml", "stages: [test]\ninclude:\n  - local: /templates/c.yml\n    inputs:\n      needed: hello\n");
        Assert.Equal(["echo hello"], PipelineDefinition.Load(given, _root).Jobs.Single().Script);
    }

    [Theory]
    [InlineData("45m", 2700)]
    [InlineData("2h 30m", 9000)]
    [InlineData("90", 90)]
    [InlineData("30 minutes", 1800)]
    public void Timeouts_read_as_GitLab_writes_them(string timeout, long seconds)
    {
        var path = Write("t.yml", $"stages: [test]\njob:\n  timeout: {timeout}\n  script: echo\n");
        Assert.Equal(seconds, PipelineDefinition.Load(path, _root).Jobs.Single().TimeoutSeconds);
    }

    [Fact]
    public async Task A_skipped_job_blocks_the_jobs_that_need_it_and_not_the_later_stages()
    {
        var path = Write("skips.yml", """
            stages: [first, second]
            by-hand:
              stage: first
              when: manual
              script: echo
            afterwards:
              stage: second
              script: echo
            needs-it:
              stage: second
              needs: [by-hand]
              script: echo
            elsewhere:
              stage: second
              tags: [docker]
              script: echo
            """);
        // /bin/true as the executor: every call succeeds, so only the pipeline's rules decide.
        var simulator = new SimulatorOptions { Executable = "/bin/true", PrepareRetryDelay = TimeSpan.Zero };
        var options = new PipelineOptions { ProjectDirOnHost = (_, _) => Path.Combine(_root, "project"), ArtifactsDir = Path.Combine(_root, "artifacts") };

        var results = await new PipelineSimulator(simulator, options, TextWriter.Null).RunAsync(PipelineDefinition.Load(path, _root), TestContext.Current.CancellationToken);

        var outcomes = results.ToDictionary(result => result.Name);
        Assert.Equal("skipped", outcomes["by-hand"].Outcome);
        Assert.Equal("success", outcomes["afterwards"].Outcome);
        Assert.Equal("skipped", outcomes["needs-it"].Outcome);
        Assert.Contains("it needs by-hand, which did not run", outcomes["needs-it"].Reason);
        Assert.Contains("needs a runner tagged docker", outcomes["elsewhere"].Reason);
    }

    public void Dispose() => Directory.Delete(_root, recursive: true);
}
