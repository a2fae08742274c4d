using GpuExecutor.Verbs;

namespace GpuExecutor.Tests;

/// <summary>The command line as System.CommandLine parses it, checked without running a verb.</summary>
public sealed class VerbCommandsTests
{
    private static System.CommandLine.ParseResult Parse(params string[] args) =>
        new VerbCommands(new FakeEnvironment([]), TextWriter.Null, TextWriter.Null, CancellationToken.None).Root.Parse(args, new System.CommandLine.ParserConfiguration { ResponseFileTokenReplacer = null });

    [Theory]
    [InlineData("--config", "/etc/c.toml", "run", "/tmp/script", "build_script")]
    [InlineData("run", "/tmp/script", "build_script", "--config", "/etc/c.toml")]
    public void Run_takes_its_script_and_stage_with_the_config_before_or_after_the_verb(params string[] args)
    {
        var parse = Parse(args);
        Assert.Empty(parse.Errors);
        Assert.Equal("run", parse.CommandResult.Command.Name);
        Assert.Equal(["/tmp/script", "build_script"], parse.CommandResult.Children.OfType<System.CommandLine.Parsing.ArgumentResult>().Select(argument => argument.GetValueOrDefault<string>()));
    }

    [Theory]
    [InlineData("run", "/tmp/script")]
    [InlineData("run", "/tmp/script", "build_script", "extra")]
    [InlineData("prepare", "extra")]
    [InlineData("no-such-verb")]
    [InlineData("checkpoints")]
    [InlineData("--unknown", "config")]
    public void A_bad_command_line_is_an_error_the_caller_maps(params string[] args) =>
        Assert.NotEmpty(Parse(args).Errors);

    [Fact]
    public void A_simulator_option_given_twice_takes_the_last_value_and_a_bad_value_is_an_error()
    {
        var parse = Parse("simulate", "job.json", "--prepare-retry-delay", "0.2", "--cancel-after", "5", "--prepare-retry-delay", "1.5");
        Assert.Empty(parse.Errors);
        Assert.Equal(1.5, parse.GetValue<double?>("--prepare-retry-delay"));
        Assert.Equal(5.0, parse.GetValue<double?>("--cancel-after"));
        Assert.Equal("job.json", parse.GetValue<string>("JOB.json"));

        Assert.NotEmpty(Parse("simulate", "job.json", "--prepare-retry-delay", "soon").Errors);
        Assert.NotEmpty(Parse("simulate", "job.json", "--job-id", "-3").Errors);
    }

    [Fact]
    public void An_argument_that_starts_with_at_is_an_argument_not_a_response_file()
    {
        var parse = Parse("run", "@/etc/passwd", "build_script");
        Assert.Empty(parse.Errors);
        Assert.Equal("@/etc/passwd", parse.CommandResult.Children.OfType<System.CommandLine.Parsing.ArgumentResult>().First().GetValueOrDefault<string>());
    }

    [Fact]
    public void Every_verb_and_sub_verb_that_an_admin_sees_has_a_description_with_an_example()
    {
        var root = new VerbCommands(new FakeEnvironment([]), TextWriter.Null, TextWriter.Null, CancellationToken.None).Root;
        var leaves = root.Subcommands.SelectMany(command => command.Subcommands.Count == 0 ? [command] : command.Subcommands).Where(command => !command.Hidden).ToList();
        Assert.True(leaves.Count >= 20, string.Join(", ", leaves.Select(command => command.Name)));
        Assert.All(leaves, command => Assert.Contains("Example: ", command.Description));
        Assert.Contains(root.Subcommands, command => command.Name == "doctor");
        Assert.Contains(root.Subcommands, command => command.Name == "register");
        Assert.Contains(root.Subcommands, command => command.Name == "events");
    }
}
